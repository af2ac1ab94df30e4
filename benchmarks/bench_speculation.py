"""Prompt-lookup speculation in our native engine, with and without, in one run (CPU or GPU).

Two workloads, every row of each batched at once:

- **copying**: the bundled demo synthesizer (a model that copies from its context, as the
  real synthesizer does) on texts it has never seen: docstrings of Python's standard library
  read from this machine (real prose with code-like bits), ``--rows`` of them, ``--new``
  tokens at most;
- **random weights**: a ~20M-parameter random Mistral on random-word prompts, which never
  copies: speculation must cost little there.

For each: the native engine without speculation, with it, and the static engine, best of
``--repeats`` runs each (interleaved); rows identical between with and without, and the
drafts' acceptance rate.

    python benchmarks/bench_speculation.py --write benchmarks/RESULTS.md
    python benchmarks/bench_speculation.py --rows 6 --new 16 --repeats 1      # seconds: the CI smoke test
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_instruct_synth import DEMO_MODEL, build_prompt  # noqa: E402
from hf_instruct_synth.engines.native import NativeEngine  # noqa: E402
from hf_instruct_synth.engines.static import StaticEngine  # noqa: E402
from hf_instruct_synth.stats import SynthesisStats  # noqa: E402

MODULES = ("json", "collections", "functools", "itertools", "pathlib", "argparse", "textwrap", "string", "heapq",
           "bisect", "shutil", "tempfile", "csv", "fractions", "statistics", "datetime", "calendar", "difflib")


def unseen_texts(n: int) -> list[str]:
    """Docstrings of the standard library on this machine, 300-1500 characters, in a fixed order."""
    out, seen = [], set()
    for name in MODULES:
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if (inspect.isfunction(obj) or inspect.isclass(obj)) else None
            if doc and 300 <= len(doc) <= 1500 and doc not in seen:
                seen.add(doc)
                out.append(" ".join(doc.split()))
                if len(out) == n:
                    return out
    return out


def run(engine, prompts):
    stats = SynthesisStats()
    start = time.perf_counter()
    outs = engine.generate(prompts, stats)
    return outs, time.perf_counter() - start, stats


def measure(model, prompts, new, eos, pad, repeats, budget):
    make = {
        "native": lambda: NativeEngine(model, pad_token_id=pad, eos_token_ids=[eos], max_new_tokens=new,
                                       max_batch_tokens=budget),
        "native + prompt lookup": lambda: NativeEngine(model, pad_token_id=pad, eos_token_ids=[eos],
                                                       max_new_tokens=new, max_batch_tokens=budget,
                                                       speculative="prompt_lookup"),
        "static": lambda: StaticEngine(model, pad_token_id=pad, eos_token_ids=[eos], max_new_tokens=new,
                                       max_batch_tokens=budget, max_pad_fraction=0.1),
    }
    for build in make.values():  # warm-up: first calls pay for allocations and lazy initialisation
        run(build(), prompts[:2])
    best: dict[str, tuple] = {}
    for _ in range(repeats):  # interleaved, so drift in the machine's speed hits every method alike
        for name, build in make.items():
            outs, seconds, stats = run(build(), prompts)
            if name not in best or seconds < best[name][1]:
                best[name] = (outs, seconds, stats)
    return best


def table(title, best, rows) -> list[str]:
    base = best["native"]
    lines = [f"**{title}**", "", "| method | time (s) | gen tok/s | × native | rows = native | drafts accepted |",
             "|---|---|---|---|---|---|"]
    for name, (outs, seconds, stats) in best.items():
        same = sum(a == b for a, b in zip(outs, base[0]))
        acc = (f"{stats.draft_tokens_accepted}/{stats.draft_tokens_proposed} ({stats.draft_acceptance:.0%})"
               if stats.draft_tokens_proposed else "-")
        lines.append(f"| {name} | {seconds:.2f} | {stats.generated_tokens / seconds:.0f} | "
                     f"{base[1] / seconds:.2f} | {same}/{rows} | {acc} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--new", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-batch-tokens", type=int, default=65536)
    ap.add_argument("--write", type=Path, help="append the tables to this markdown file")
    args = ap.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_instruct_synth.demo.tiny import make_mistral, make_tokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(DEMO_MODEL)
    demo = AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32).eval()
    texts = unseen_texts(args.rows)
    prompts = [tok(build_prompt(t), add_special_tokens=False)["input_ids"] for t in texts]
    copying = measure(demo, prompts, args.new, tok.eos_token_id, tok.pad_token_id, args.repeats,
                      args.max_batch_tokens)

    words = "the of and to in a is that for it as was with be by on not he this are or his from at".split()
    rtok = make_tokenizer([" ".join(words)] * 50, vocab_size=400)
    random_model = make_mistral(rtok, hidden_size=512, layers=6, heads=8, kv_heads=4, intermediate_size=1536,
                                initializer_range=0.2, seed=0)
    rng = __import__("random").Random(0)
    rprompts = [rtok(build_prompt(" ".join(rng.choice(words) for _ in range(rng.randint(20, 300)))),
                     add_special_tokens=False)["input_ids"] for _ in range(len(prompts))]
    with torch.no_grad():
        random_model.lm_head.weight[rtok.eos_token_id] = 0  # every row runs to the limit: the same work for all
    rnd = measure(random_model, rprompts, min(args.new, 64), rtok.eos_token_id, rtok.pad_token_id, args.repeats,
                  args.max_batch_tokens)

    lines = [f"### Prompt-lookup speculation, native engine, {len(prompts)} rows batched at once", "",
             f"Command: `python benchmarks/bench_speculation.py --rows {args.rows} --new {args.new} --repeats "
             f"{args.repeats} --max-batch-tokens {args.max_batch_tokens} --write benchmarks/RESULTS.md`",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
             f"{torch.__version__}, {time.strftime('%Y-%m-%d')}; best of {args.repeats} interleaved runs; 4 draft "
             "tokens, n-grams of 2-3 tokens.", ""]
    lines += table(f"Copying: the demo synthesizer on {len(prompts)} unseen texts (standard-library docstrings), "
                   f"≤ {args.new} new tokens", copying, len(prompts))
    lines += table(f"Random weights (never copies): 20M-parameter Mistral, {len(rprompts)} random-word prompts, "
                   f"{min(args.new, 64)} new tokens each", rnd, len(rprompts))
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(args.write, "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
