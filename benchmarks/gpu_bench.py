"""The synthesizer's real architecture on one GPU: engines and attention kernels against the ceiling.

The model is Mistral-7B's configuration (the synthesizer's) with random bf16 weights, so
nothing is downloaded. Prompts average ~700 tokens (lognormal, a tail to ~2k) and outputs
~250 tokens; every method generates exactly the same number of tokens for each prompt
(a per-prompt target length, fixed by the seed), because random weights cannot be trusted
to stop on their own: the EOS row of ``lm_head`` is zeroed so it is never chosen, and each
method stops each row at its target (static: a per-row stopping criterion through our
``StaticEngine``; continuous: per-request ``max_new_tokens``; vLLM: per-request
``max_tokens`` with ``ignore_eos``).

The ceiling is computed here, from this machine's measured memory bandwidth (a large copy)
and matmul rate (a large bf16 GEMM), for this exact workload: the larger of the compute time
(2 x parameters x every prompt and generated token, plus attention) and the memory time
(every decode step reads the weights once for the whole running batch, plus each row's KV
cache; the running batch is limited by the memory left for the KV cache).

    python benchmarks/gpu_bench.py --write benchmarks/RESULTS.md          # on a GPU
    python benchmarks/gpu_bench.py --tiny --prompts 6                     # CPU smoke test (CI)

Each method's result is written (``--json`` rewritten, a row appended to ``--write``) as
soon as it finishes, so a run killed at a time limit keeps every finished method; run one
method group per command (benchmarks/README.md lists the commands for a 10-minute limit).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import random
import sys
import time
import weakref
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights and local folders only: never wait on a Hub
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_instruct_synth.engines.static import StaticEngine  # noqa: E402
from hf_instruct_synth.stats import SynthesisStats  # noqa: E402

MISTRAL_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                  rope_theta=10000.0, sliding_window=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)
TINY = dict(MISTRAL_7B, vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096)
EOS, PAD = 2, 0


def workload(n: int, mean_prompt: int, mean_new: int, vocab: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Prompt token ids (lognormal lengths, capped at 2,048) and each prompt's output length."""
    rng = random.Random(seed)
    sigma = 0.6
    mu = __import__("math").log(mean_prompt) - sigma ** 2 / 2
    prompts = [[rng.randrange(3, vocab) for _ in range(min(2048, max(16, int(rng.lognormvariate(mu, sigma)))))]
               for _ in range(n)]
    targets = [max(8, min(2 * mean_new, int(rng.gauss(mean_new, mean_new / 3)))) for _ in range(n)]
    return prompts, targets


def measure_machine(device: str, dtype: torch.dtype) -> dict:
    """Measured copy bandwidth (bytes/s) and matmul rate (FLOP/s) of this device."""
    def timed(fn, reps):
        fn()
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return (time.perf_counter() - start) / reps

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n_bytes = (2 << 30) if device.startswith("cuda") else (256 << 20)
    src = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    bandwidth = 2 * n_bytes / timed(lambda: dst.copy_(src), 10)
    k = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(k, k, dtype=dtype, device=device)
    b = torch.randn(k, k, dtype=dtype, device=device)
    flops = 2 * k ** 3 / timed(lambda: a @ b, 20 if device.startswith("cuda") else 3)
    return {"bandwidth": bandwidth, "flops": flops}


def ceiling(cfg: dict, prompts: list[list[int]], targets: list[int], machine: dict, weight_bytes: float,
            kv_budget_bytes: float, dtype_bytes: int) -> dict:
    """Best possible generated tokens/s for this workload on this machine (see module docstring)."""
    layers, hidden = cfg["num_hidden_layers"], cfg["hidden_size"]
    kv_per_token = 2 * layers * cfg["num_key_value_heads"] * cfg["head_dim"] * dtype_bytes
    params = weight_bytes / dtype_bytes
    tokens = sum(map(len, prompts)) + sum(targets)
    # attention: 4 x layers x hidden x context per token (QK^T and PV), context averaged over the row
    attn = sum(4 * layers * hidden * (len(p) * len(p) / 2 + g * (len(p) + g / 2)) for p, g in zip(prompts, targets))
    compute_s = (2 * params * tokens + attn) / machine["flops"]
    mean_ctx = sum(len(p) + g / 2 for p, g in zip(prompts, targets)) / len(prompts)
    max_batch = max(1, int(kv_budget_bytes / (kv_per_token * (mean_ctx + max(targets) / 2))))
    steps = sum(targets) / min(max_batch, len(prompts))
    kv_read = sum(kv_per_token * (g * len(p) + g * g / 2) for p, g in zip(prompts, targets))
    memory_s = (steps * weight_bytes + kv_read) / machine["bandwidth"]
    best = max(compute_s, memory_s)
    return {"tokens_per_s": sum(targets) / best, "bound": "compute" if compute_s >= memory_s else "memory",
            "max_batch": max_batch, "compute_s": compute_s, "memory_s": memory_s}


def stop_rows_at_targets(model, targets_by_prompt: dict[tuple, int]) -> None:
    """Wrap ``model.generate`` so each row stops at its own target length (a stopping criterion);
    the engine above it is unchanged. A stopped row is filled with padding, which is not counted."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class PerRow(StoppingCriteria):
        def __init__(self, limits, width):
            self.limits, self.width = limits, width

        def __call__(self, input_ids, scores, **kwargs):
            return (input_ids.shape[1] - self.width) >= self.limits

    # the class's function and a weak reference: a closure over the bound method would be a reference
    # cycle (model -> generate -> model), and the model would outlive `del` until a gc pass
    original, ref = type(model).generate, weakref.ref(model)

    def generate(input_ids, attention_mask, **kw):
        rows = [tuple(r[m.bool()].tolist()) for r, m in zip(input_ids.cpu(), attention_mask.cpu())]
        limits = torch.tensor([targets_by_prompt[r] for r in rows], device=input_ids.device)
        kw["stopping_criteria"] = StoppingCriteriaList([PerRow(limits, input_ids.shape[1])])
        return original(ref(), input_ids=input_ids, attention_mask=attention_mask, **kw)

    model.generate = generate


def run_static(model, prompts, targets, max_batch_tokens, max_pad_fraction):
    engine = StaticEngine(model, pad_token_id=PAD, eos_token_ids=[EOS], max_new_tokens=max(targets),
                          max_batch_tokens=max_batch_tokens, pad_to_multiple_of=8, max_pad_fraction=max_pad_fraction)
    stats = SynthesisStats()
    outs = engine.generate(prompts, stats)
    return [len([t for t in o if t != PAD]) for o in outs], stats.pad_tokens


def run_native(model, prompts, targets, max_batch_tokens, speculative):
    from hf_instruct_synth.engines.native import NativeEngine
    from hf_instruct_synth.synthesizer import default_max_prompt_tokens

    engine = NativeEngine(model, pad_token_id=PAD, eos_token_ids=[EOS], max_new_tokens=max(targets),
                          max_batch_tokens=max_batch_tokens, max_prompt_tokens=default_max_prompt_tokens(model),
                          speculative=speculative)
    stats = SynthesisStats()
    outs = engine.generate(prompts, stats, limits=targets)  # each row stops at its own target
    ran = str(getattr(model.config, "_attn_implementation", "?"))
    if speculative:
        ran += f", drafts {stats.draft_tokens_accepted}/{stats.draft_tokens_proposed} accepted"
    return [len(o) for o in outs], stats.pad_tokens, None, ran


def run_per_row(model, prompts, targets):
    lens = []
    for p, g in zip(prompts, targets):
        ids = torch.tensor([p], device=model.device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=g, min_new_tokens=g,
                             do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
        lens.append(out.shape[1] - len(p))
    return lens, 0


def run_continuous(model, prompts, targets, max_batch_tokens):
    """Continuous batching; the manager starts (and warms up on two prompts) before the timer runs.
    Returns the lengths, 0 pad, the timed seconds, and the attention implementation that ran."""
    from hf_instruct_synth.engines.continuous import ContinuousEngine

    engine = ContinuousEngine(model, pad_token_id=PAD, eos_token_ids=[EOS], max_new_tokens=max(targets),
                              max_batch_tokens=max_batch_tokens)  # our greedy config and cache sizing
    extra = {"continuous_batching_config": engine.cache_config} if engine.cache_config is not None else {}
    manager = model.init_continuous_batching(generation_config=engine.generation_config, **extra)
    manager.start()
    try:
        def run(batch, tag):
            for i, (p, g) in enumerate(batch):
                manager.add_request(p, request_id=f"{tag}{i}", max_new_tokens=g)
            lens = {}
            while len(lens) < len(batch):
                result = manager.get_result(timeout=600)
                if result is None:
                    raise RuntimeError(f"continuous batching stopped after {len(lens)} of {len(batch)} results")
                if getattr(result, "is_finished", lambda: True)():
                    lens[result.request_id] = len(result.generated_tokens)
            return [lens[f"{tag}{i}"] for i in range(len(batch))]

        run(list(zip(prompts, targets))[:2], "warm")
        start = time.perf_counter()
        lens = run(list(zip(prompts, targets)), "r")
        seconds = time.perf_counter() - start
    finally:
        manager.stop(block=True)
    return lens, 0, seconds, str(getattr(model.config, "_attn_implementation", "?"))


def run_vllm(folder: Path, prompts, targets, max_model_len):
    """vLLM on dummy weights, leaving this process's CUDA context room; the peak is what vLLM took."""
    import vllm

    free, total = torch.cuda.mem_get_info()
    utilization = max(0.1, (free - (2 << 30)) / total)  # leave 2 GiB beside what is already taken
    llm = vllm.LLM(model=str(folder), load_format="dummy", dtype="bfloat16", max_model_len=max_model_len,
                   skip_tokenizer_init=True, seed=0, gpu_memory_utilization=round(utilization, 3))
    params = [vllm.SamplingParams(temperature=0.0, max_tokens=g, ignore_eos=True, detokenize=False) for g in targets]
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sampling_params=params, use_tqdm=False)
    seconds = time.perf_counter() - start
    taken = (free - torch.cuda.mem_get_info()[0]) / 2**30  # vLLM's processes, not this one's allocator
    return [len(o.outputs[0].token_ids) for o in outs], 0, seconds, f"vllm (gpu_memory_utilization {utilization:.2f})", taken


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a scaled-down config (CPU smoke test)")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--mean-prompt", type=int, default=700)
    ap.add_argument("--mean-new", type=int, default=250)
    ap.add_argument("--per-row", type=int, default=8, help="prompts for the per-row generate baseline")
    ap.add_argument("--max-batch-tokens", type=int, help="static engine budget (default: from free memory)")
    ap.add_argument("--methods", default="per-row,static-sdpa,static-flash,static-sdpa-nopadlimit,native,native-spec,"
                                        "continuous,vllm")
    ap.add_argument("--write", type=Path, help="append the table to this markdown file")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON (rewritten after each method)")
    ap.add_argument("--die-after", help=argparse.SUPPRESS)  # tests: exit hard after the method so named
    ap.add_argument("--vllm-config", default="/tmp/hf-instruct-synth-gpu-bench-config",
                    help="folder for the config vLLM loads (dummy weights)")
    args = ap.parse_args(argv)

    from transformers import MistralConfig, MistralForCausalLM

    from hf_instruct_synth.synthesizer import default_max_batch_tokens

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = TINY if args.tiny else MISTRAL_7B
    if args.tiny:
        args.mean_prompt, args.mean_new = min(args.mean_prompt, 70), min(args.mean_new, 25)
    config = MistralConfig(**cfg, bos_token_id=1, eos_token_id=EOS, pad_token_id=PAD)
    machine = measure_machine(device, dtype)
    prompts, targets = workload(args.prompts, args.mean_prompt, args.mean_new, cfg["vocab_size"], seed=0)
    max_model_len = max(len(p) + g for p, g in zip(prompts, targets)) + 8
    methods = args.methods.split(",")
    results: dict[str, dict] = {}
    models = {}

    def model_for(attn):
        if attn not in models:
            free_models()
            torch.manual_seed(0)
            with torch.device(device):
                default = torch.get_default_dtype()
                torch.set_default_dtype(dtype)
                try:
                    m = MistralForCausalLM._from_config(config, attn_implementation=attn)
                finally:
                    torch.set_default_dtype(default)
            with torch.no_grad():
                m.lm_head.weight[EOS].zero_()  # never chosen: every row runs to its target
                m.lm_head.weight[PAD].zero_()
            m.eval()
            stop_rows_at_targets(m, {tuple(p): g for p, g in zip(prompts, targets)})
            models[attn] = m
        return models[attn]

    def free_models():
        models.clear()
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    flash = device == "cuda" and importlib.util.find_spec("flash_attn") is not None
    weight_bytes = sum(p.numel() for p in model_for("sdpa").parameters()) * (2 if dtype == torch.bfloat16 else 4)
    free = torch.cuda.mem_get_info()[0] if device == "cuda" else 8 << 30
    budget = args.max_batch_tokens or default_max_batch_tokens(model_for("sdpa"))
    top = ceiling(cfg, prompts, targets, machine, weight_bytes, max(free * 0.9, 1), 2 if dtype == torch.bfloat16 else 4)

    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    header = [
        f"### {'Scaled-down smoke test' if args.tiny else 'Mistral-7B architecture'} on {name}, {len(prompts)} prompts",
        "",
        f"Command: `python benchmarks/gpu_bench.py{' --tiny' if args.tiny else ''} --prompts {args.prompts} "
        f"--mean-prompt {args.mean_prompt} --mean-new {args.mean_new} --methods {args.methods}`",
        f"Machine: {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; measured copy bandwidth "
        f"{machine['bandwidth'] / 1e9:.0f} GB/s, matmul {machine['flops'] / 1e12:.1f} TFLOP/s ({dtype}). "
        f"Prompt tokens {sum(map(len, prompts))}, generated {sum(targets)}. Static budget {budget} tokens.",
        f"Ceiling for this workload: {top['tokens_per_s']:.0f} generated tok/s ({top['bound']}-bound; compute "
        f"{top['compute_s']:.1f}s, memory {top['memory_s']:.1f}s at up to {top['max_batch']} rows in flight).",
        "",
        "| method | ran with | time (s) | gen tok/s | prompt tok/s | texts/s | pad | peak GiB | % of ceiling |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    if args.write:
        with open(args.write, "a") as f:
            f.write("\n" + "\n".join(header) + "\n")

    def save(label: str) -> None:
        """Keep what finished: the JSON rewritten and the markdown row appended after every method."""
        r = results[label]
        if "error" in r or "skipped" in r:
            what = f"failed: {r['error']}" if "error" in r else f"skipped: {r['skipped']}"
            row = f"| {label} | {r.get('ran', '')} | {what} | | | | | | |"
        else:
            tps = r["gen"] / r["s"]
            peak = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
            row = (f"| {label} | {r['ran']} | {r['s']:.1f} | {tps:.0f} | {r['prompt'] / r['s']:.0f} | "
                   f"{r['texts'] / r['s']:.2f} | {r['pad'] / max(1, r['prompt']):.1%} | {peak} | "
                   f"{tps / top['tokens_per_s']:.0%} |")
        print(row, flush=True)
        if args.write:
            with open(args.write, "a") as f:
                f.write(row + "\n")
        if args.json:
            args.json.write_text(json.dumps({"machine": machine, "ceiling": top, "results": results}, indent=2))

    def record(label, fn, ran, n=len(prompts)):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            out = fn()
        except Exception as err:  # noqa: BLE001 - one method failing must not hide the others' figures
            results[label] = {"ran": ran, "error": f"{type(err).__name__}: "
                                                   f"{str(err).splitlines()[0][:160] if str(err) else ''}"}
            return save(label)
        if device == "cuda":
            torch.cuda.synchronize()
        lens, pads = out[0], out[1]
        seconds = out[2] if len(out) > 2 and out[2] is not None else time.perf_counter() - start
        ran = out[3] if len(out) > 3 else ran
        peak = out[4] if len(out) > 4 else (torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None)
        if lens != targets[:n]:
            results[label] = {"ran": ran, "error": f"generated {sum(lens)} tokens, expected {sum(targets[:n])}"}
            return save(label)
        results[label] = {"s": seconds, "gen": sum(lens), "prompt": sum(map(len, prompts[:n])), "texts": n,
                          "pad": pads, "peak_gib": peak, "ran": ran}
        save(label)
        if args.die_after and label.startswith(args.die_after):
            os._exit(137)  # for tests: end as a time limit's kill would, mid-run

    def attn_of(model) -> str:
        return str(getattr(model.config, "_attn_implementation", "?"))

    if "per-row" in methods:
        k = min(args.per_row, len(prompts))
        m = model_for("sdpa")
        record(f"per-row generate (model card), first {k} prompts",
               lambda: run_per_row(m, prompts[:k], targets[:k]), attn_of(m), n=k)
    if "static-sdpa" in methods:
        m = model_for("sdpa")
        record("ours: static, pad ≤ 10%", lambda: run_static(m, prompts, targets, budget, 0.1), attn_of(m))
    if "static-sdpa-nopadlimit" in methods:
        m = model_for("sdpa")
        record("ours: static, budget only", lambda: run_static(m, prompts, targets, budget, None), attn_of(m))
    if "native" in methods:
        m = model_for("flash_attention_2" if flash else "sdpa")
        record("ours: native", lambda: run_native(m, prompts, targets, budget, None), attn_of(m))
    if "native-spec" in methods:
        m = model_for("flash_attention_2" if flash else "sdpa")
        record("ours: native + prompt lookup", lambda: run_native(m, prompts, targets, budget, "prompt_lookup"),
               attn_of(m))
    if "continuous" in methods:
        m = model_for("sdpa")
        record("ours: continuous (transformers)", lambda: run_continuous(m, prompts, targets, budget), "?")
    if "static-flash" in methods:
        if flash:
            m = model_for("flash_attention_2")
            record("ours: static, pad ≤ 10%, flash", lambda: run_static(m, prompts, targets, budget, 0.1), attn_of(m))
        else:
            results["ours: static, pad ≤ 10%, flash"] = {"ran": "-", "skipped": "flash-attn is not installed here"}
            save("ours: static, pad ≤ 10%, flash")
    if "vllm" in methods and importlib.util.find_spec("vllm") is not None and device == "cuda":
        free_models()
        folder = Path(args.vllm_config)
        folder.mkdir(parents=True, exist_ok=True)
        config.architectures = ["MistralForCausalLM"]  # vLLM refuses a config without it
        config.save_pretrained(folder)
        record("vLLM (dummy weights)", lambda: run_vllm(folder, prompts, targets, max_model_len), "vllm")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
