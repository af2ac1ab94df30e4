"""GPU readiness check that needs only torch and transformers (no ``datasets``, no network).

Builds a small random Mistral with the bundled demo tokenizer, saves it to a folder, and runs
the whole transform (``InstructionSynthesizer.__call__``: loading straight onto the device,
placement, flash-attention detection and fallback, budget sizing, the static engine) in bf16,
with SDPA and with flash-attention 2 when it can run, then compares every row with per-row
``generate``. On CPU (``--device cpu``, float32) every row must match; on a GPU in bf16 a few
rows may differ by floating-point ties, and the count is reported.

    HF_HUB_OFFLINE=1 python benchmarks/gpu_check.py                 # on the GPU machine, ~1 minute
    python benchmarks/gpu_check.py --device cpu --rows 8            # anywhere (CI runs it without datasets)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def per_row(model, tokenizer, prompt_ids: list[int], new: int) -> str:
    ids = torch.tensor([prompt_ids], device=model.device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from hf_instruct_synth import DEMO_MODEL, InstructionSynthesizer
    from hf_instruct_synth.loading import flash_attention_usable

    tok = AutoTokenizer.from_pretrained(DEMO_MODEL)
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                           num_attention_heads=8, num_key_value_heads=4, head_dim=32, max_position_embeddings=4096,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, initializer_range=0.2)
    config.architectures = ["MistralForCausalLM"]
    folder = Path(tempfile.mkdtemp(prefix="hf-instruct-synth-gpu-check-"))
    MistralForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    words = "the river city north water king bridge built year people market trade library wrote".split()
    rng = __import__("random").Random(0)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 120))) + "." for _ in range(args.rows)]
    on_gpu = args.device.startswith("cuda")
    dtype = "bfloat16" if on_gpu else "float32"
    attns = ["sdpa"] + (["flash_attention_2"] if on_gpu and flash_attention_usable(args.device, dtype) else [])
    report = {"device": torch.cuda.get_device_name() if on_gpu else "cpu", "torch": torch.__version__,
              "dtype": dtype, "results": {}}
    failed = False
    for attn in attns:
        synth = InstructionSynthesizer(model=str(folder), max_new_tokens=args.new, max_model_len=1024,
                                       device=args.device, dtype=dtype, attn_implementation=attn, engine="static")
        start = time.perf_counter()
        out = synth({"text": texts})["synthesizer_output"]
        seconds = time.perf_counter() - start
        model, ran = synth._loaded["model"], synth._loaded["model"].config._attn_implementation
        same = sum(o == per_row(model, tok, synth.encode_prompt(t), args.new) for o, t in zip(out, texts))
        ok = same == len(texts) if not on_gpu else same >= 0.8 * len(texts)
        failed |= not ok
        report["results"][attn] = {"ran": ran, "rows_identical_to_per_row": f"{same}/{len(texts)}",
                                   "seconds": round(seconds, 2), "batches": synth.stats.batches,
                                   "pad_fraction": round(synth.stats.pad_fraction, 3), "ok": ok}
        print(f"{attn}: ran {ran}, {same}/{len(texts)} rows identical to per-row generate, "
              f"{synth.stats.batches} sub-batches, {seconds:.1f}s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
