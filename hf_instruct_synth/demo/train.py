"""Train the bundled demo synthesizer: a tiny Mistral that writes ``<QUE> … <ANS> … </END>`` items.

It is a demonstration and test model, not the published 7B synthesizer: it learns, on CPU
in minutes, to read ``<s> <CON> text </CON>\\n\\n`` and write well-formed items whose
answers are spans copied from the context, then ``</s>``. Training has two phases: first
pure copying (random token sequences repeated), where induction (copy) heads form within a
few hundred steps; then synthesizer examples generated here from a fixed seed, with a
quarter of each batch still copying. The examples: short encyclopaedic contexts stating
invented facts, with a question about each fact in order, and prose (common words mixed with
invented words, names and numbers) walked clause by clause ("What comes after "<clause>" in
the text?" answered by the next clause), which carries over to any real prose.

Reproduce the committed weights (about 17 minutes on 2 CPU cores)::

    python -m hf_instruct_synth.demo.train --out hf_instruct_synth/demo

Evaluate any checkpoint on held-out generated contexts, the example data and the held-out
sets of real text of every kind (``eval/``, per-kind table)::

    python -m hf_instruct_synth.demo.train --eval-only --out hf_instruct_synth/demo
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

from ..format import build_prompt, format_pairs
from .tiny import SPECIAL_TOKENS

SEED = 1234
SYLLABLES = ("ka ri mo ta le ven sor dan mi lo ber tha gal ed win ros ana fel cor ul pri nes "
             "val dor ly an is el mar gun hil da jo tor bri sta qua zen hol wyn ar").split()
JOBS = ("painter sailor physician astronomer carpenter lawyer teacher merchant engineer poet "
        "architect botanist printer baker soldier chemist surveyor weaver judge composer").split()
MATERIALS = "stone oak marble brick iron granite timber glass copper limestone".split()
THINGS = "cathedral,bridge,town hall,lighthouse,library,harbour wall,market hall,tower".split(",")
TOPICS = ("birds,rivers,the stars,old maps,glaciers,medicine,ancient coins,music,the sea,farming,"
          "volcanoes,trade routes,insects,clocks").split(",")
FIELDS = "botany music law medicine history painting astronomy chemistry".split()
WORDS = ("the a of and in to was is it that for with as on by at from his her their which "
         "old new great small long river hill road house king church people city water land year "
         "time day night light early late north south east west first last many few other same "
         "good high low open wide deep quiet strong bright dark cold warm green white black red").split()


COMMON = ("about after again air all also always animal another answer any are around ask away back be "
          "because been before began began below between big boat book both boy bring build but call came can "
          "carry change children city close cold come could country course cross cut dark day did different do "
          "does door down draw during each early earth end enough even every eye face family far father few field "
          "find fire first fish follow food foot for form found friend from full gave girl give go good got great "
          "green ground group grow had half hand hard has have head hear heard help her here high hill him his "
          "hold home horse house how idea important island just keep kind king knew know land large last later "
          "learn leave left let letter life light like line little live long look made make man many map mark may "
          "mean men might mile mind more morning most mother mountain move much music must name near need never "
          "new next night north nothing now number ocean off often old once only open order other our out over "
          "own page paper part pass people picture place plant play point port present put question quick quiet "
          "rain ran read ready real red remember rest right river road rock room round run said same saw say school "
          "sea second see seem sentence set she ship short should show side simple since sing small snow so some "
          "song soon sound south speak stand star start state still stone stood story street strong study such sun "
          "sure table take talk tell than that their them then there these they thing think this those thought "
          "three through time today together told too took top toward town tree true try turn under until upon us "
          "use very voice walk want warm was watch water way weather well went were west what when where which "
          "while white whole why wide wind window winter with without wood word work world would write year young").split()


def _name(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _person(rng: random.Random) -> str:
    return f"{_name(rng, rng.randint(2, 3))} {_name(rng, rng.randint(2, 3))}"


def _place(rng: random.Random) -> str:
    return _name(rng, 2) + rng.choice(["ford", "ton", "burg", "field", "mouth", "wick", "by", "dale", ""])


def _prose_sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) if rng.random() < 0.7 else _name(rng, rng.randint(1, 2)).lower()
             for _ in range(rng.randint(6, 14))]
    return " ".join(words).capitalize() + "."


def _word(rng: random.Random) -> str:
    """A prose word: mostly common English, else an invented word, name, number or compound
    (so copying, not memory, is what answers questions about words never seen in training)."""
    r = rng.random()
    if r < 0.70:
        return rng.choice(COMMON)
    if r < 0.84:
        return _name(rng, rng.randint(1, 4)).lower()
    if r < 0.93:
        return _name(rng, rng.randint(1, 3)) + ("'s" if rng.random() < 0.15 else "")
    if r < 0.97:
        return str(rng.randint(1, 2000))
    return f"{rng.choice(COMMON)}-{rng.choice(COMMON)}"


def _prose(rng: random.Random) -> str:
    words = []
    for i in range(rng.randint(4, 24)):
        words.append(_word(rng) + (rng.choice([",", ",", ",", ";", ":"]) if rng.random() < 0.15 and i > 1 else ""))
    return re.sub(r"[,;:]$", "", " ".join(words)).capitalize() + rng.choice([".", ".", ".", "!", "?"])


def clauses(text: str) -> list[str]:
    """The text cut at punctuation (, ; : . ! ?), each clause without its closing mark; a clause
    under two words keeps its mark and joins the next, so every clause is a span of the text."""
    out, carry = [], ""
    for piece in re.findall(r"[^,;:.!?]+[,;:.!?]*", text):
        raw = (carry + piece) if carry else piece.strip()
        clause = re.sub(r"[,;:.!?]+$", "", raw).strip()
        if len(clause.split()) < 2:
            carry = raw
            continue
        out.append(clause)
        carry = ""
    return out


def walk_questions(text: str, rng: random.Random, max_items: int = 3) -> list[dict]:
    """Questions any prose supports, walking through it: each item quotes a clause and is
    answered by the next one, and the next item starts after that answer. Every boundary is
    punctuation, so the model copies and never counts."""
    parts, pairs = clauses(text), []
    for i in range(0, len(parts) - 1, 2):
        if len(pairs) == max_items:
            break
        quote, answer = parts[i], parts[i + 1]
        question = (f'What comes after "{quote}" in the text?' if rng.random() < 0.5
                    else f'Continue the text: "{quote} ..."')
        pairs.append({"instruction": question, "response": answer})
    return pairs


def make_example(rng: random.Random) -> tuple[str, list[dict]]:
    """One context and its pairs: invented facts, or plain prose walked clause by clause."""
    return _fact_example(rng) if rng.random() < 0.25 else _prose_example(rng)


def _prose_example(rng: random.Random) -> tuple[str, list[dict]]:
    text = " ".join(_prose(rng) for _ in range(rng.randint(1, 6)))
    while len(clauses(text)) < 2:
        text += " " + _prose(rng)
    return text, walk_questions(text, rng)


def _fact_example(rng: random.Random) -> tuple[str, list[dict]]:
    """Invented facts and questions about them, in the order the facts are stated (one per
    fact, at most four): every answer is a span of the context."""
    p, p2 = _person(rng), _person(rng)
    first = p.split()[0]
    born, city, river, other = _place(rng), _place(rng), _name(rng, 2), _place(rng)
    year = rng.randint(1500, 1950)
    year2 = year + rng.randint(20, 60)
    job, field, topic = rng.choice(JOBS), rng.choice(FIELDS), rng.choice(TOPICS)
    thing, material = rng.choice(THINGS), rng.choice(MATERIALS)
    org = f"the {_name(rng, 2)} Society of {field.capitalize()}"
    n_books, miles = rng.randint(2, 40), rng.randint(3, 90)
    facts = [
        (f"{p} was born in {born} in {year}.",
         [(f"Where was {p} born?", born), (f"In which year was {p} born?", str(year))]),
        (f"{first} worked as a {job} in {city} for many years.",
         [(f"What did {first} work as?", f"a {job}"), (f"In which town did {first} work?", city)]),
        (f"In {year2}, {first} founded {org}.",
         [(f"What did {first} found in {year2}?", org), (f"When did {first} found {org}?", str(year2))]),
        (f"{first} wrote {n_books} books about {topic}.",
         [(f"How many books did {first} write?", str(n_books)), (f"What did {first} write about?", topic)]),
        (f"{first} married {p2}, a {rng.choice(JOBS)} from {other}.",
         [(f"Whom did {first} marry?", p2), (f"Where was {p2} from?", other)]),
        (f"The {thing} of {city} is built of {material}.",
         [(f"What is the {thing} of {city} built of?", material)]),
        (f"{city} lies on the {river} river, {miles} miles from {born}.",
         [(f"Which river does {city} lie on?", f"the {river} river"),
          (f"How far is {city} from {born}?", f"{miles} miles")]),
    ]
    chosen = [facts[0]] + rng.sample(facts[1:], rng.randint(2, 5))
    sentences = [s for s, _ in chosen]
    if rng.random() < 0.5:
        sentences.insert(rng.randint(1, len(sentences)), _prose_sentence(rng))
    pairs = [{"instruction": q, "response": a} for q, a in (rng.choice(qs) for _, qs in chosen[:4])]
    return " ".join(sentences), pairs


def training_text(text: str, pairs: list[dict]) -> tuple[str, str]:
    return build_prompt(text), format_pairs(pairs) + "</s>"


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


def _task_row(tok, rng: random.Random) -> tuple[list[int], list[int]]:
    """One synthesizer example: the prompt is read (no loss), the items and ``</s>`` are learned."""
    prompt, target = training_text(*make_example(rng))
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tok(target, add_special_tokens=False)["input_ids"]
    return p_ids + t_ids, [-100] * len(p_ids) + t_ids


def _copy_row(tok, rng: random.Random, prose_share: float = 0.0) -> tuple[list[int], list[int]]:
    """A token sequence, a separator, the same sequence again; the repeat is learned.

    Random tokens make induction (copy) heads form within a few hundred steps, which the
    synthesizer examples alone did not do in a CPU budget (see README.md); prose, whose
    common words recur, teaches copying where one previous token is ambiguous."""
    if rng.random() >= prose_share:
        seq = [rng.randrange(len(SPECIAL_TOKENS), tok.vocab_size) for _ in range(rng.randint(8, 48))]
    else:
        seq = tok(" ".join(_prose(rng) for _ in range(rng.randint(1, 3))), add_special_tokens=False)["input_ids"][:96]
    sep = tok.convert_tokens_to_ids("</CON>")
    return [tok.bos_token_id, *seq, sep, *seq], [-100] * (len(seq) + 2) + seq


def _batch(rows: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids, _ in rows])[:, None]).long()
    return input_ids, labels, mask


def train(out: Path, minutes: float, steps: int, batch_size: int, seed: int, copy_steps: int = 600,
          copy_share: float = 0.25, lr_max: float = 3e-3) -> None:
    """Two phases: ``copy_steps`` of pure copying (induction heads form), then synthesizer
    examples with ``copy_share`` of each batch still copying, on a cosine schedule."""
    import torch

    from .tiny import make_mistral, make_tokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    corpus = [make_example(rng) for _ in range(6000)]
    tok = make_tokenizer([t + " " + format_pairs(p) for t, p in corpus[:3000]], vocab_size=1024)
    model = make_mistral(tok, hidden_size=128, layers=3, heads=4, kv_heads=2, intermediate_size=384,
                         max_position_embeddings=4096, seed=seed)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {len(tok)}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr_max, betas=(0.9, 0.98), weight_decay=0.01)
    warmup, total = 50, copy_steps + steps
    start, step = time.time(), 0
    while step < total and (time.time() - start) < minutes * 60:
        if step < copy_steps:
            rows = [_copy_row(tok, rng) for _ in range(32)]
        else:
            n_copy = round(batch_size * copy_share)
            rows = [_copy_row(tok, rng, prose_share=0.5) for _ in range(n_copy)] + [_task_row(tok, rng) for _ in range(batch_size - n_copy)]
        input_ids, labels, mask = _batch(rows, tok.pad_token_id)
        lr = lr_max * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            phase = "copy" if step <= copy_steps else "task"
            print(f"step {step} ({phase}) loss {loss.item():.3f} lr {lr:.2e} {time.time() - start:.0f}s", flush=True)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    print(f"trained {step} steps in {time.time() - start:.0f}s -> {out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--minutes", type=float, default=19.0, help="stop training after this long")
    ap.add_argument("--steps", type=int, default=2000, help="synthesizer-example steps after the copy phase")
    ap.add_argument("--copy-steps", type=int, default=600)
    ap.add_argument("--copy-share", type=float, default=0.25)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--eval-only", action="store_true")
    args = ap.parse_args(argv)
    if not args.eval_only:
        train(args.out, args.minutes, args.steps, args.batch_size, args.seed, args.copy_steps, args.copy_share, args.lr)
    held_rng = random.Random(args.seed + 1)  # contexts never seen in training
    held_out = [make_example(held_rng)[0] for _ in range(200)]
    results = {"held_out_generated": evaluate(args.out, held_out)}
    examples = example_texts()
    if examples:
        results["examples_data"] = evaluate(args.out, examples)
    print(json.dumps(results, indent=2))
    report(args.out)  # real text of every kind, never seen in training


if __name__ == "__main__":
    main()
