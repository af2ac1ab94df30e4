"""Turn a synthesized chain into varied pre-training texts.

A chain is a list of links, oldest first, each ``{"text", "instruction_response_pairs",
"inherits"}`` (``inherits``: this link was prompted with the previous one). Links that
inherit are joined into one few-shot text; a link with no pair is emitted as its raw
text. Every pair is classified (multiple choice, chain-of-thought, both, plain) and
rendered with phrasings drawn from ``templates/default.json``; a layout is drawn per text:
classic, dialog, numbered, inline or next-turn dialog, and rarely inversion (the pairs
before the passage). The same chain and seed give the same texts on any machine.
"""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path
from typing import Any

from . import __version__

LAYOUTS = ("classic", "dialog", "numbered", "inline", "next_turn")
#: Layout weights (percent) as in the paper's code: few pairs favour the classic layout.
WEIGHTS_FEW_PAIRS = {"classic": 95, "dialog": 5}
WEIGHTS = {"classic": 80, "dialog": 5, "numbered": 5, "inline": 5, "next_turn": 5}
INVERSION_PROBABILITY = 0.05  # drawn only with the classic layout, as the reference does
#: Bumped whenever a structural rule changes what a seed renders (recorded with every text).
RULES_VERSION = 2

COT_MARK = "\nLet's think step by step."
COT_ANSWER = "\nTherefore, the answer is "
OPTIONS_MARK = "\nOptions:\n- "
UNANSWERABLE = {"unanswerable", "none of the above", "none of these", "no answer", "not enough information",
                "cannot be determined", "it is impossible to say", "not answerable", "it cannot be determined"}


@cache
def templates() -> dict[str, Any]:
    return json.loads((Path(__file__).parent / "templates" / "default.json").read_text())


def templify_version() -> str:
    """Package and template versions, recorded with every templified row."""
    return f"{__version__}+templates.{templates()['version']}+rules.{RULES_VERSION}"


def classify(pair: dict) -> dict | None:
    """Split a pair into its parts; ``None`` for a malformed multiple-choice or CoT pair.

    Example:
        >>> classify({"instruction": "Which?\\nOptions:\\n- x\\n- y", "response": "y"})["kind"]
        'mc'
    """
    q, a = pair["instruction"].strip(), pair["response"].strip()
    part = {"kind": "plain", "stem": q, "reasoning": None, "answer": a, "options": None}
    if q.endswith(COT_MARK) and COT_MARK.strip() != q:  # the marker on its own line, as the reference requires
        if COT_ANSWER.strip() not in a:
            return None
        reasoning, final = a.rsplit(COT_ANSWER.strip(), 1)
        final = final.strip().rstrip(".").strip()
        if not final:
            return None
        part.update(kind="cot", stem=q[: -len(COT_MARK.strip())].rstrip(), reasoning=reasoning.strip(), answer=final)
    if OPTIONS_MARK.strip("\n") in part["stem"]:
        stem, block = part["stem"].split("\nOptions:\n", 1) if "\nOptions:\n" in part["stem"] else ("", "")
        options = [line[2:].strip() for line in block.splitlines() if line.startswith("- ") and line[2:].strip()]
        if not stem.strip() or len(options) < 2:
            return None
        answer = part["answer"].strip().rstrip(".")
        lowered = [o.lower().rstrip(".") for o in options]
        if answer.lower() in lowered:
            correct = lowered.index(answer.lower())
        elif answer.lower() in UNANSWERABLE:
            correct = None  # maps to a drawn "none of the above" option
        else:
            return None
        part.update(kind="mc+cot" if part["kind"] == "cot" else "mc", stem=stem.strip(), options=options,
                    correct=correct)
    return part


def templify(chain: list[dict], seed: int) -> list[str]:
    """Pre-training texts for one chain.

    Example:
        >>> chain = [{"text": "Ada wrote code.", "inherits": False,
        ...           "instruction_response_pairs": [{"instruction": "Who wrote code?", "response": "Ada"}]}]
        >>> len(templify(chain, seed=0))
        1
    """
    return [t["text"] for t in templify_with_modes(chain, seed)]


def templify_with_modes(chain: list[dict], seed: int) -> list[dict]:
    """Like :func:`templify`, with each text's drawn layout (``mode``) and ``inverted`` flag."""
    rng = random.Random(f"templify:{seed}")
    out: list[dict] = []
    segment: list[tuple[dict, list[dict]]] = []

    def flush():
        if segment:
            out.append(_render(segment, rng))
            segment.clear()

    for link in chain:
        parts = [p for p in (classify(pair) for pair in link.get("instruction_response_pairs") or []) if p]
        if not parts:
            flush()
            out.append({"text": link["text"], "mode": "raw", "inverted": False})
            continue
        if not link.get("inherits"):
            flush()
        segment.append((link, parts))
    flush()
    return out


def draw_layout(rng: random.Random, min_pairs: int) -> str:
    weights = WEIGHTS_FEW_PAIRS if min_pairs < 2 else WEIGHTS
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _render(segment: list[tuple[dict, list[dict]]], rng: random.Random) -> dict:
    t = templates()
    layout = draw_layout(rng, min(len(parts) for _, parts in segment))
    inverted = rng.random() < INVERSION_PROBABILITY and layout == "classic"
    style = {
        "intro": rng.choice(t["context_intro"]), "questions": rng.choice(t["questions_intro"]),
        "qa": rng.choice(t["qa"]), "roles": rng.choice(t["dialog_roles"]), "dialog": rng.choice(t["dialog_intro"]),
        "nq": rng.choice(t["numbered_questions_header"]), "na": rng.choice(t["numbered_answers_header"]),
        "num": rng.choice(t["number_style"]), "inline": rng.choice(t["inline_join"]),
        "open": rng.choice(t["next_turn_open"]), "inversion": rng.choice(t["inversion_intro"]),
        "sep": rng.choice(t["link_separator"]),
    }
    blocks = []
    for link, parts in segment:
        pairs = [_render_pair(p, rng) for p in parts]
        blocks.append(_layout(layout, inverted, link["text"].strip(), pairs, style))
    return {"text": style["sep"].join(blocks), "mode": layout, "inverted": inverted}


def _render_pair(part: dict, rng: random.Random) -> tuple[str, str]:
    t = templates()
    question, answer = part["stem"], part["answer"]
    if part["options"] is not None:
        options = list(part["options"])
        correct = options[part["correct"]] if part["correct"] is not None else None
        if correct is None:
            correct = rng.choice(t["none_of_the_above"])
            options.append(correct)
        rng.shuffle(options)
        labels = rng.choice(t["option_labels"])
        while len(labels) < len(options):  # more options than a style has labels: number them
            labels = [str(i + 1) for i in range(len(options))]
        fmt = rng.choice(t["option_format"])
        label = labels[options.index(correct)]
        question += "\n" + rng.choice(t["options_header"]) + "\n" + "\n".join(
            fmt.format(l=lab, o=opt) for lab, opt in zip(labels, options))
        answer = rng.choice(t["answer_label"]).format(l=label, o=correct)
    if part["reasoning"] is not None:
        question += "\n" + rng.choice(t["cot_prompt"])
        answer = part["reasoning"] + "\n" + rng.choice(t["cot_conclusion"]).format(a=answer)
    return question, answer


def _layout(layout: str, inverted: bool, text: str, pairs: list[tuple[str, str]], s: dict) -> str:
    if layout == "classic":
        qa = "\n\n".join(s["qa"].format(q=q, a=a) for q, a in pairs)
        head, tail = s["intro"] + text, qa
        joiner = s["questions"]
    elif layout == "dialog":
        user, bot = s["roles"]
        head, tail = text, s["dialog"] + "\n".join(f"{user}: {q}\n{bot}: {a}" for q, a in pairs)
        joiner = "\n\n"
    elif layout == "numbered":
        qs = "\n".join(s["num"].format(n=i + 1) + q for i, (q, _) in enumerate(pairs))
        ans = "\n".join(s["num"].format(n=i + 1) + a for i, (_, a) in enumerate(pairs))
        head, tail = text, f"{s['nq']}\n{qs}\n\n{s['na']}\n{ans}"
        joiner = "\n\n"
    elif layout == "inline":
        head, tail = text, "\n\n".join(s["inline"].format(q=q, a=a) for q, a in pairs)
        joiner = "\n\n"
    else:  # next_turn: the passage opens the first turn of a dialog
        user, bot = s["roles"]
        (q0, a0), rest = pairs[0], pairs[1:]
        opening = q0 if inverted else s["open"].format(context=text) + q0
        turns = [f"{user}: {opening}", f"{bot}: {a0}"]
        turns += [line for q, a in rest for line in (f"{user}: {q}", f"{bot}: {a}")]
        head, tail, joiner = text, "\n".join(turns), ""
        if not inverted:
            return tail
    if inverted:
        return tail + "\n\n" + s["inversion"] + text
    return head + joiner + tail


def row_seed(seed: int, text: str) -> int:
    """The templify seed of one text at M = 1: from the run's seed and the text's content (no row index,
    no Python ``hash()``), so the same text renders the same way in any process and any shard.

    Example:
        >>> row_seed(0, "Ada wrote code.") == row_seed(0, "Ada wrote code.") != row_seed(1, "Ada wrote code.")
        True
    """
    import hashlib

    return int(hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest()[:16], 16)


def augment_rows(texts: list, pairs: list, seed: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """Pre-training texts of single texts (M = 1): each its raw text with its pairs templified.

    A text without pairs is its raw text alone; a missing (invalid) text gives no text.
    Returns ``(augmented_texts, template_modes)``, one list each per row.

    Example:
        >>> augment_rows(["Ada wrote code."], [[]])
        ([['Ada wrote code.']], [['raw']])
    """
    texts_out, modes_out = [], []
    for text, row_pairs in zip(texts, pairs):
        if not isinstance(text, str) or not text.strip():
            texts_out.append([])
            modes_out.append([])
            continue
        rendered = templify_with_modes([{"text": text, "instruction_response_pairs": row_pairs or [],
                                         "inherits": False}], seed=row_seed(seed, text))
        texts_out.append([t["text"] for t in rendered])
        modes_out.append([t["mode"] + ("+inverted" if t["inverted"] else "") for t in rendered])
    return texts_out, modes_out


class Templify:
    """A batched ``ds.map`` transform: adds ``augmented_texts`` and ``template_modes`` to a dataset with pairs.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"text": ["Ada wrote code."],
        ...                         "instruction_response_pairs": [[{"instruction": "Who wrote code?", "response": "Ada"}]]})
        >>> out = ds.map(Templify(seed=0), batched=True)
        >>> "Ada wrote code." in out[0]["augmented_texts"][0] and "Who wrote code?" in out[0]["augmented_texts"][0]
        True
    """

    def __init__(self, seed: int = 0, text_column: str = "text",
                 pairs_column: str = "instruction_response_pairs") -> None:
        self.seed, self.text_column, self.pairs_column = seed, text_column, pairs_column

    def __call__(self, batch: dict) -> dict:
        texts, modes = augment_rows(batch[self.text_column], batch[self.pairs_column], self.seed)
        return {"augmented_texts": texts, "template_modes": modes}
