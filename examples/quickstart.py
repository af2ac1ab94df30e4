"""Quick start in Python: ``ds.map`` with the bundled demo synthesizer, offline on CPU.

    python examples/quickstart.py
"""

from pathlib import Path

from datasets import load_dataset

from hf_instruct_synth import DEMO_MODEL, InstructionSynthesizer
from hf_instruct_synth.templify import Templify

data = Path(__file__).parent / "data" / "paragraphs.jsonl"
ds = load_dataset("json", data_files=str(data), split="train")

synth = InstructionSynthesizer(model=DEMO_MODEL, max_new_tokens=160, max_model_len=1024)
ds = ds.map(synth, batched=True, batch_size=64)
ds = ds.map(Templify(seed=0), batched=True)  # the pre-training text: raw text + templified pairs

for row in ds.select(range(2)):
    print(row["source"])
    for pair in row["instruction_response_pairs"]:
        print(f"  Q: {pair['instruction']}\n  A: {pair['response']}")
print("\nOne instruction-augmented pre-training text:\n")
print(ds[0]["augmented_texts"][0])
print(f"\n{synth.stats.rows} rows, {synth.stats.pairs} pairs, {synth.stats.rows_without_pairs} rows without pairs")
