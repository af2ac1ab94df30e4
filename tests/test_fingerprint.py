"""Caching: datasets fingerprints the transform cheaply and stably, never by its weights."""

from __future__ import annotations

import subprocess
import sys

from datasets import Dataset, load_from_disk
from datasets.fingerprint import Hasher

from conftest import skewed_texts
from hf_instruct_synth import InstructionSynthesizer


def test_fingerprint_stable_across_instances_and_processes(tiny_model_dir):
    a = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8)
    b = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8)
    assert Hasher.hash(a) == Hasher.hash(b)
    code = ("from hf_instruct_synth import InstructionSynthesizer as S; from datasets.fingerprint import Hasher; "
            f"print(Hasher.hash(S(model={str(tiny_model_dir)!r}, max_new_tokens=8)))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == Hasher.hash(a)


def test_fingerprint_changes_with_what_changes_outputs(tiny_model_dir, tmp_path):
    base = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8)
    assert Hasher.hash(base) != Hasher.hash(InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=9))
    assert Hasher.hash(base) != Hasher.hash(InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8,
                                                                   dedupe=False))
    assert Hasher.hash(InstructionSynthesizer(model="org/m", revision="v1")) != \
        Hasher.hash(InstructionSynthesizer(model="org/m", revision="v2"))
    # other weights in a copied folder change the digest
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert InstructionSynthesizer(model=str(copy), max_new_tokens=8).fingerprint() == base.fingerprint()
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert InstructionSynthesizer(model=str(copy), max_new_tokens=8).fingerprint() != base.fingerprint()


def test_loaded_model_is_hashed_by_sample_not_weights(tiny_model, tiny_tokenizer):
    synth = InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer, max_new_tokens=8)
    synth({"text": ["the king wrote."]})
    from datasets.utils._dill import dumps

    assert len(dumps(synth)) < 1000  # weights are megabytes
    assert Hasher.hash(synth) == Hasher.hash(InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer,
                                                                    max_new_tokens=8))


def test_second_identical_map_is_a_cache_hit_without_loading(tiny_model_dir, tmp_path):
    Dataset.from_dict({"text": skewed_texts(20, seed=2)}).save_to_disk(tmp_path / "src")
    ds = load_from_disk(tmp_path / "src")  # backed by files, so map results are cached
    first = ds.map(InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8), batched=True)
    again = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8)
    second = ds.map(again, batched=True)
    assert not again.is_loaded and again.stats.rows == 0  # served from the cache
    assert second.cache_files == first.cache_files
    assert second["synthesizer_output"] == first["synthesizer_output"]
