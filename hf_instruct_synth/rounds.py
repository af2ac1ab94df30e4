"""Multi-round M-shot synthesis: chains of texts, each prompted with its chain's history.

The published scheme: N texts are cut into M consecutive slices; text i of slice r is
link r of chain i. In round r every chain's link r is prompted with the chain's history
(each earlier link cooked as prompt + its pairs + ``</s>``) when the previous link produced
pairs and the whole prompt fits ``max_model_len - max_new_tokens`` by real token counts;
otherwise it starts fresh and is marked as not inheriting. Each round is one batched
generation: length sorting happens inside the engine, which puts rows back, so chains
never break.
"""

from __future__ import annotations

import math
import time

from .format import build_prompt, cook_training_text
from .synthesizer import InstructionSynthesizer
from .templify import templify_version, templify_with_modes


def build_chains(n: int, rounds: int) -> list[list[int]]:
    """Row indices of each chain: ``N`` rows in ``rounds`` consecutive slices, chain i takes item i of each.

    A shorter last slice leaves some chains a link shorter; none is lost.

    Example:
        >>> build_chains(7, 3)
        [[0, 3, 6], [1, 4], [2, 5]]
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    k = math.ceil(n / rounds) if n else 0
    slices = [range(r * k, min((r + 1) * k, n)) for r in range(rounds)]
    return [[s[i] for s in slices if i < len(s)] for i in range(k)]


HISTORY_BUDGETS = ("tokens", "words")


def fits_history(prompt_ids: list[int], prompt_text: str, limit: int, budget: str) -> bool:
    """Whether a prompt with history may be used: its real token count (``tokens``, the default) or the
    reference scripts' estimate, ``len(text.split(" ")) * 1.5`` (``words``), within ``limit``.

    A ``words`` estimate that admits a prompt whose real tokens do not fit still starts fresh: a
    prompt longer than the context cannot be generated from.

    Example:
        >>> fits_history([0] * 5, "a b c d", 6, "words"), fits_history([0] * 5, "a b c d e", 6, "words")
        (True, False)
        >>> fits_history([0] * 7, "a b", 6, "tokens")
        False
    """
    if budget == "words" and len(prompt_text.split(" ")) * 1.5 > limit:
        return False
    return len(prompt_ids) <= limit


def synthesize_rounds(dataset, synthesizer: InstructionSynthesizer, rounds: int = 2, *, seed: int = 0,
                      templify: bool = True, row_offset: int = 0, history_budget: str = "tokens"):
    """Run ``rounds``-round M-shot synthesis over ``dataset``; return one row per chain.

    Columns: ``chain_id``, ``rows`` (input row indices, oldest link first), ``links``
    (``text``, ``instruction_response_pairs``, ``synthesizer_output``, ``inherits``),
    and with ``templify``: ``augmented_texts``, ``template_modes``, ``templify_version``,
    ``templify_seed``. ``row_offset`` shifts row numbers (the runner's shards).
    ``history_budget`` decides whether a link is prompted with its chain's history
    (:func:`fits_history`): ``"tokens"`` counts real tokens, ``"words"`` is the reference's estimate.

    Example:
        >>> chains = synthesize_rounds(ds, InstructionSynthesizer(model=DEMO_MODEL), rounds=2)  # doctest: +SKIP
        >>> chains[0]["augmented_texts"]  # doctest: +SKIP
    """
    from datasets import Dataset

    if history_budget not in HISTORY_BUDGETS:
        raise ValueError(f"history_budget must be one of {HISTORY_BUDGETS}, got {history_budget!r}")
    start = time.perf_counter()
    synth = synthesizer
    texts = list(dataset[synth.text_column]) if synth.text_column in dataset.column_names else \
        synth.texts_of(dataset[:0])
    chains = build_chains(len(texts), rounds)
    valid = set(synth.check_rows(texts, list(range(row_offset, row_offset + len(texts)))))
    limit = synth.max_model_len - synth.max_new_tokens
    if valid:
        synth.load()
    history: list[list] = [[] for _ in chains]  # (text, pairs) links the next link of each chain follows
    links: list[list[dict]] = [[] for _ in chains]
    for r in range(rounds):
        members = [(c, chain[r]) for c, chain in enumerate(chains) if r < len(chain)]
        prompts, todo = [], []
        for c, row in members:
            link = {"text": texts[row] if isinstance(texts[row], str) else "", "instruction_response_pairs": [],
                    "synthesizer_output": "", "inherits": False}
            links[c].append(link)
            if row not in valid:
                history[c] = []
                continue
            ids = None
            if history[c]:
                ids = synth.encode_prompt(texts[row], history[c])
                text = "".join(cook_training_text(t, p) for t, p in history[c]) + build_prompt(texts[row])
                if not fits_history(ids, text, limit, history_budget):
                    ids, history[c] = None, []  # does not fit: start fresh
                else:
                    link["inherits"] = True
            if ids is None:
                ids = synth.fit_prompt(texts[row], f"row {row + row_offset}")
            prompts.append(ids)
            todo.append(c)
        outputs, pairs = synth.generate_prompts(prompts) if prompts else ([], [])
        for c, out, row_pairs in zip(todo, outputs, pairs):
            link = links[c][-1]
            link["synthesizer_output"], link["instruction_response_pairs"] = out, row_pairs
            prefix = history[c] if link["inherits"] else []
            history[c] = [*prefix, (link["text"], row_pairs)] if row_pairs else []
        synth.count_rows([links[c][-1]["instruction_response_pairs"] for c, _ in members], generated=len(prompts))
    synth.stats.wall_time_s += time.perf_counter() - start
    columns: dict[str, list] = {"chain_id": [row_offset + c for c in range(len(chains))],
                                "rows": [[row_offset + i for i in chain] for chain in chains], "links": links}
    if templify:
        rendered = [templify_with_modes(chain_links, seed=seed * 1_000_003 + row_offset + c)
                    for c, chain_links in enumerate(links)]
        columns["augmented_texts"] = [[t["text"] for t in r] for r in rendered]
        columns["template_modes"] = [[t["mode"] + ("+inverted" if t["inverted"] else "") for t in r] for r in rendered]
        columns["templify_version"] = [templify_version()] * len(chains)
        columns["templify_seed"] = [seed] * len(chains)
    return Dataset.from_dict(columns, features=chain_features(templify))


def chain_features(templify: bool = True):
    """The ``datasets.Features`` of a rounds output: one row per chain."""
    from datasets import Features, List, Value

    pair = {"instruction": Value("string"), "response": Value("string")}
    return Features({
        "chain_id": Value("int64"), "rows": List(Value("int64")),
        "links": List({"text": Value("string"), "instruction_response_pairs": List(pair),
                       "synthesizer_output": Value("string"), "inherits": Value("bool")}),
        **({"augmented_texts": List(Value("string")), "template_modes": List(Value("string")),
            "templify_version": Value("string"), "templify_seed": Value("int64")} if templify else {}),
    })
