"""Train the bundled demo synthesizer: a tiny Mistral that writes ``<QUE> … <ANS> … </END>`` items.

It is a demonstration and test model, not the published 7B synthesizer: it learns, on CPU
within an hour, to read ``<s> <CON> text </CON>\\n\\n`` for any kind of text (prose,
documentation with code, markdown, HTML, tables) and write well-formed items whose question
quotes the text exactly and whose answer is the span that follows the quote, then ``</s>``.

What makes a model this small read any text:

* **Items are built from the context's own tokens.** The quote and the answer are copied
  token for token from the prompt (never re-tokenized: a word after ``"`` tokenizes otherwise
  than the same word after a space), so writing them is pure copying, which induction heads
  do for any token, markup and code included.
* **The walk**: the text is cut into units that end at punctuation (``, |`` always, ``. ! ?
  ; :`` before a space) or a line end, short units joined, long ones cut at a word start;
  item k quotes unit 2k and is answered by unit 2k+1 (with the whitespace between), so every
  copy starts where the last one stopped, behind a fixed template. At most three items.
* **Contexts of every kind** (:mod:`.kinds`): real standard-library docstrings and code,
  cast into prose, docs, markdown, HTML and tables; none of the held-out sources is read.
* Two phases: pure copying first (short random sequences, then ever longer ones and real
  text), where copy heads form, then items, with a share of copying kept and a tenth of
  prompts carrying an M-shot history (earlier links, as ``--rounds`` feeds them back).

Reproduce the committed weights (about 40 minutes on 2 CPU cores, bf16 autocast)::

    python -m hf_instruct_synth.demo.train --out hf_instruct_synth/demo

Evaluate any checkpoint on held-out generated contexts, the example data and the held-out
sets of real text of every kind (``eval/``, per-kind table)::

    python -m hf_instruct_synth.demo.train --eval-only --out hf_instruct_synth/demo
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import re
import time
from pathlib import Path

from ..format import build_prompt, cook_training_text, parse_pairs
from .kinds import Pieces, make_context
from .tiny import SPECIAL_TOKENS

SEED = 1234
VOCAB_SIZE = 2048
MAX_ITEMS = 3
MIN_UNIT = 4  # tokens (not counting whitespace) a unit needs, else it joins the next
MAX_UNIT = 12  # tokens a unit may have before it is cut at a word start
MAX_COPY = 320  # tokens of the longest copied sequence
#: (before the quote, after it): fixed token sequences, so resuming a copy is a fixed-offset look back
TEMPLATES = (('What comes after "', '" in the text?'), ('Continue the text: "', ' ..."'))


@functools.cache
def pieces() -> Pieces:
    """The standard library's texts, read once per process."""
    return Pieces.from_stdlib()


def make_text(rng: random.Random) -> str:
    """One training context, of a kind drawn by :data:`kinds.KIND_WEIGHTS`."""
    return make_context(rng, pieces())


def units(strs: list[str]) -> list[tuple[int, int, int]]:
    """The walk's units of a context given as its tokens' strings: ``(start, core_end, end)``,
    the unit's own tokens ``[start, core_end)`` and the whitespace after it ``[core_end, end)``.

    A unit ends after a token ending in ``,`` or ``|``, or in ``. ! ? ; :`` before a token that
    starts with whitespace, or before a line break. Units under :data:`MIN_UNIT` tokens join the
    next (the last one, the one before); units over :data:`MAX_UNIT` are cut at a word start,
    leaving no piece under :data:`MIN_UNIT`. Units cover the text after its leading whitespace
    without gaps.

    Example:
        >>> units([" Hi", ",", " you", " there", ",", " all", " of", " us", ".", "\\n", "Ok", " then", " we", " go"])
        [(0, 5, 5), (5, 9, 10), (10, 14, 14)]
        >>> units([" Hi", ",", " you", " there", ",", " all", " of", " us", ".", "\\n", "Ok"])
        [(0, 5, 5), (5, 11, 11)]
    """
    n = len(strs)
    ws = [not s.strip() for s in strs]
    i = 0
    while i < n and ws[i]:
        i += 1
    raw: list[list[int]] = []
    while i < n:
        start = j = i
        while j < n and "\n" not in strs[j]:
            j += 1
            last = strs[j - 1].rstrip()
            if last and (last[-1] in ",|" or (last[-1] in ".!?;:" and (j == n or strs[j][:1].isspace()))):
                break
        core_end = j
        while core_end > start and ws[core_end - 1]:
            core_end -= 1
        while j < n and ws[j]:
            j += 1
        raw.append([start, core_end, j])
        i = j
    joined: list[list[int]] = []
    for u in raw:
        if joined and sum(not ws[k] for k in range(joined[-1][0], joined[-1][1])) < MIN_UNIT:
            joined[-1][1:] = u[1:]
        else:
            joined.append(u)
    if len(joined) > 1 and sum(not ws[k] for k in range(joined[-1][0], joined[-1][1])) < MIN_UNIT:
        last = joined.pop()
        joined[-1][1:] = last[1:]
    out: list[tuple[int, int, int]] = []
    for start, core_end, end in joined:
        while core_end - start > MAX_UNIT:  # cut at the last word start that leaves both sides whole units
            last = min(start + MAX_UNIT, core_end - MIN_UNIT)
            words = [k for k in range(start + MAX_UNIT // 2, last + 1) if strs[k][:1] == " "]
            cut = words[-1] if words else last
            out.append((start, cut, cut))
            start = cut
        out.append((start, core_end, end))
    if len(out) == 1 and out[0][1] - out[0][0] >= 2:  # one unit: halve it, so even a short text has an item
        start, core_end, end = out[0]
        cut = (start + core_end + 1) // 2
        out = [(start, cut, cut), (cut, core_end, end)]
    return out


def _last(ids: list[int], token: int) -> int:
    """The index of the last ``token`` in ``ids``."""
    return len(ids) - 1 - ids[::-1].index(token)


class ItemWriter:
    """Writes a context's items as token ids, from the tokenizer's own tokens of the context."""

    def __init__(self, tok) -> None:
        self.tok = tok
        ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.heads = [ids(f"<QUE> {before}") for before, _ in TEMPLATES]
        self.mids = [ids(f"{after} <ANS>") for _, after in TEMPLATES]
        self.end, self.sep, self.eos = ids(" </END>"), ids("\n\n"), [tok.eos_token_id]
        self.con, self.con_end = tok.convert_tokens_to_ids("<CON>"), tok.convert_tokens_to_ids("</CON>")
        self.strs = [tok.decode([i]) for i in range(len(tok))]

    def prompt_ids(self, text: str) -> list[int]:
        return self.tok(build_prompt(text), add_special_tokens=False)["input_ids"]

    def target(self, prompt: list[int], rng: random.Random) -> list[int]:
        """The items for the last ``<CON> … </CON>`` of ``prompt`` (ids), then ``</s>``."""
        ctx = prompt[_last(prompt, self.con) + 1: _last(prompt, self.con_end)]
        walk = units([self.strs[i] for i in ctx])
        items = []
        for k in range(0, len(walk) - 1, 2):
            if len(items) == MAX_ITEMS:
                break
            (q0, q1, _), (_, _, a1) = walk[k], walk[k + 1]
            t = rng.randrange(len(TEMPLATES))
            items.append(self.heads[t] + ctx[q0:q1] + self.mids[t] + ctx[q1:a1] + self.end)
        out: list[int] = []
        for i, item in enumerate(items):
            out += (self.sep if i else []) + item
        return out + self.eos

    def pairs(self, prompt: list[int], rng: random.Random) -> list[dict]:
        return parse_pairs(self.tok.decode(self.target(prompt, rng), skip_special_tokens=True))


def evaluate(model_dir: str | Path, texts: list[str], max_new_tokens: int = 160, engine=None) -> dict:
    """How the synthesizer at ``model_dir`` does on ``texts``, through the pipeline (parsing,
    de-duplication and the repetition guard apply): the share of rows whose output parses to
    ≥ 1 pair, pairs per row, the share of answers that are exact spans of their text
    (whitespace runs read as one space, nothing else forgiven), the share found ignoring case
    and a final period (``answers_in_context``, the looser measure of earlier reports), the
    share of quoting questions whose quote is an exact span, and pairs dropped as loops.
    ``engine`` (an ``Engine``) replaces the model, as in ``InstructionSynthesizer(engine=...)``."""
    from datasets import Dataset

    from ..synthesizer import InstructionSynthesizer

    synth = InstructionSynthesizer(model=str(model_dir), max_new_tokens=max_new_tokens, max_model_len=1024,
                                   **({"engine": engine} if engine is not None else {}))
    out = Dataset.from_dict({"text": texts}).map(synth, batched=True, batch_size=64)
    rows_with_pairs = sum(bool(p) for p in out["instruction_response_pairs"])
    pairs = [(p, t) for t, ps in zip(texts, out["instruction_response_pairs"]) for p in ps]
    quotes = [(q, t) for q, t in ((_quote(p["instruction"]), t) for p, t in pairs) if q is not None]
    n = max(1, len(pairs))
    return {"rows": len(texts), "rows_with_pairs": rows_with_pairs / len(texts), "answers": len(pairs),
            "pairs_per_row": len(pairs) / len(texts),
            "exact_spans": sum(_squeeze(p["response"]) in _squeeze(t) for p, t in pairs) / n,
            "answers_in_context": sum(_norm(p["response"]) in _norm(t) for p, t in pairs) / n,
            "quotes_exact": sum(_squeeze(q) in _squeeze(t) for q, t in quotes) / max(1, len(quotes)),
            "loops_dropped": synth.stats.repetition_loops,
            "gen_tokens_per_s": round(synth.stats.generated_tokens_per_s, 1)}


def report(model_dir: str | Path) -> dict[str, dict]:
    """Evaluate ``model_dir`` on each held-out set of real text (``eval/*.jsonl``, cut by
    ``make_eval_sets.py``) and print the table the demo's README shows."""
    from .make_eval_sets import KINDS, load

    results = {kind: evaluate(model_dir, load(kind)) for kind in KINDS}
    print("| held-out set | texts | rows with ≥ 1 pair | pairs per row | answers exact spans | "
          "questions quoting exactly | pairs dropped as loops |")
    print("|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        print(f"| {kind} | {r['rows']} | {r['rows_with_pairs']:.0%} | {r['pairs_per_row']:.2f} | "
              f"{r['exact_spans']:.0%} (of {r['answers']}) | {r['quotes_exact']:.0%} | {r['loops_dropped']} |")
    return results


def _squeeze(s: str) -> str:
    return " ".join(s.split())


def _quote(question: str) -> str | None:
    """The text a question quotes (between its first and last double quote), or None."""
    if question.count('"') < 2:
        return None
    return question[question.index('"') + 1: question.rindex('"')].removesuffix(" ...")


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().rstrip(".").lower())


def example_texts() -> list[str]:
    folder = Path(__file__).resolve().parents[2] / "examples" / "data"
    path = folder / "paragraphs.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _task_row(writer: ItemWriter, rng: random.Random, history_share: float = 0.1) -> tuple[list[int], list[int]]:
    """One synthesizer example: the prompt is read (no loss), the items and ``</s>`` are learned.
    A ``history_share`` of prompts carry one or two earlier links, as ``--rounds`` feeds them back."""
    history: list[int] = []
    if rng.random() < history_share:
        for _ in range(rng.randint(1, 2)):
            text = make_text(rng)
            history += writer.tok(cook_training_text(text, writer.pairs(writer.prompt_ids(text), rng)),
                                  add_special_tokens=False)["input_ids"]
    prompt = history + writer.prompt_ids(make_text(rng))
    target = writer.target(prompt, rng)
    return prompt + target, [-100] * len(prompt) + target


def _copy_row(writer: ItemWriter, rng: random.Random, longest: int = 48, real_share: float = 0.0
              ) -> tuple[list[int], list[int]]:
    """A token sequence of 8 to ``longest`` tokens, a separator, the same sequence again; the
    repeat is learned.

    Short random sequences make induction (copy) heads form within a few hundred steps; the
    length then grows slowly (a sudden jump to long sequences undoes the heads), and real
    text (``real_share``), whose tokens recur (markup, table rules, code), teaches copying
    where one previous token is ambiguous."""
    tok = writer.tok
    n = rng.randint(8, max(8, longest))
    if rng.random() < real_share:
        seq = tok(make_text(rng), add_special_tokens=False)["input_ids"][:n]
    else:
        seq = [rng.randrange(len(SPECIAL_TOKENS), tok.vocab_size) for _ in range(n)]
    return [tok.bos_token_id, *seq, writer.con_end, *seq], [-100] * (len(seq) + 2) + seq


def _batches(rows: list[tuple[list[int], list[int]]], budget: int, rng: random.Random) -> list[list]:
    """Rows sorted by length and packed into batches of at most ``budget`` padded tokens, in random order."""
    rows = sorted(rows, key=lambda r: len(r[0]))
    batches, cur = [], []
    for row in rows:
        if cur and (len(cur) + 1) * len(row[0]) > budget:
            batches.append(cur)
            cur = []
        cur.append(row)
    batches.append(cur)
    rng.shuffle(batches)
    return batches


def _tensors(rows: list[tuple[list[int], list[int]]], pad_id: int):
    """Input ids and labels, padded on the right: under causal attention a pad never reaches
    the tokens before it and is not learned, so no attention mask is needed (SDPA's fused
    causal path is faster)."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    return input_ids, labels


def train(out: Path, steps: int, copy_steps: int, budget: int, seed: int, copy_share: float = 0.25,
          lr_max: float = 2e-3, minutes: float = 60.0) -> None:
    """``copy_steps`` of pure copying (copy heads form: short random sequences, 32 a batch, in
    the first three fifths; then ever longer ones and real text), then ``steps`` of items with
    ``copy_share`` of the rows still copying; batches of ``budget`` padded tokens, bf16 autocast,
    a cosine schedule. Stops early after ``minutes`` (the weights then differ from a full run)."""
    import torch

    from .tiny import make_mistral, make_tokenizer

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = random.Random(seed)
    tok = make_tokenizer([make_text(rng) for _ in range(6000)], vocab_size=VOCAB_SIZE)
    writer = ItemWriter(tok)
    model = make_mistral(tok, hidden_size=256, layers=4, heads=4, kv_heads=2, intermediate_size=768,
                         max_position_embeddings=4096, seed=seed, tie_word_embeddings=True)
    model.train()
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocab {len(tok)}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr_max, betas=(0.9, 0.98), weight_decay=0.01)
    warmup, total, short_steps = 50, copy_steps + steps, copy_steps * 3 // 5
    start, step, queue, losses = time.time(), 0, [], {"copy": [], "task": []}
    while step < total and (time.time() - start) < minutes * 60:
        if step < short_steps:  # 32 short random copies, unsorted: copy heads form soonest so
            rows = [_copy_row(writer, rng) for _ in range(32)]
        elif step < copy_steps:  # then longer, step by step, up to MAX_COPY tokens, and real text
            grown = (step - short_steps + 1) / (copy_steps - short_steps)
            longest = round(48 + (MAX_COPY - 48) * grown)
            rows = [_copy_row(writer, rng, longest, real_share=0.5 * grown) for _ in range(max(8, 32 * 48 // longest))]
        else:
            if not queue:  # a pool of rows, bucketed by length
                pool = [_copy_row(writer, rng, MAX_COPY, 0.5) if rng.random() < copy_share else _task_row(writer, rng)
                        for _ in range(256)]
                queue = _batches(pool, budget, rng)
            rows = queue.pop()
        input_ids, labels = _tensors(rows, tok.pad_token_id)
        lr = lr_max * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=input_ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        # logged by the kind of the batch's first row (the items phase mixes both in one batch)
        losses["copy" if rows[0][0][-1] != tok.eos_token_id else "task"].append(loss.item())
        if step % 50 == 0:
            shown = " ".join(f"{k} {sum(v[-20:]) / max(1, len(v[-20:])):.3f}" for k, v in losses.items() if v)
            print(f"step {step} loss {shown} lr {lr:.2e} {time.time() - start:.0f}s", flush=True)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    print(f"trained {step} steps in {time.time() - start:.0f}s -> {out}", flush=True)



def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--steps", type=int, default=2200, help="item steps after the copy phase")
    ap.add_argument("--copy-steps", type=int, default=1000)
    ap.add_argument("--copy-share", type=float, default=0.25)
    ap.add_argument("--budget", type=int, default=8192, help="padded tokens per batch")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--minutes", type=float, default=60.0, help="stop training early after this long")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--eval-only", action="store_true")
    args = ap.parse_args(argv)
    if not args.eval_only:
        train(args.out, args.steps, args.copy_steps, args.budget, args.seed, args.copy_share, args.lr, args.minutes)
    held_rng = random.Random(args.seed + 1)  # contexts never seen in training
    results = {"held_out_generated": evaluate(args.out, [make_text(held_rng) for _ in range(100)])}
    examples = example_texts()
    if examples:
        results["examples_data"] = evaluate(args.out, examples)
    print(json.dumps(results, indent=2))
    report(args.out)  # real text of every kind, never seen in training


if __name__ == "__main__":
    main()
