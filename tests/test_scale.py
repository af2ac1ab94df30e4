"""Scaling up: shards over several worker processes, streaming input, and Ray Data actors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from conftest import skewed_texts
from hf_instruct_synth import InstructionSynthesizer
from hf_instruct_synth.run import synthesize_to_dir


def _rows(out: Path) -> list[dict]:
    return [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _sidecars(out: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted((out / ".hf-instruct-synth").glob("*.json"))]


@pytest.fixture(scope="module")
def source_and_reference(tiny_model_dir, tmp_path_factory):
    ds = Dataset.from_dict({"text": skewed_texts(14, seed=31), "n": list(range(14))})
    ref = tmp_path_factory.mktemp("ref")
    stats = synthesize_to_dir(ds, InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8), ref,
                              shard_rows=4, progress=False)
    return ds, _rows(ref), stats


def test_two_worker_processes_write_the_same_rows(tiny_model_dir, tmp_path, source_and_reference):
    ds, reference, ref_stats = source_and_reference
    stats = synthesize_to_dir(ds, InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8), tmp_path,
                              shard_rows=4, num_workers=2, progress=False)
    assert _rows(tmp_path) == reference
    assert {s["worker"] for s in _sidecars(tmp_path)} == {0, 1}  # both processes took shards
    assert all(s["placement"]["rank"] == s["worker"] for s in _sidecars(tmp_path))  # each loaded with its rank
    assert stats.rows == 14 and stats.generated_tokens == ref_stats.generated_tokens  # merged over processes


def test_streaming_input_shards_by_row_count_and_resumes(tiny_model_dir, tmp_path, source_and_reference):
    ds, reference, _ = source_and_reference

    def run():
        synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8)
        return synthesize_to_dir(ds.to_iterable_dataset(), synth, tmp_path, shard_rows=4, progress=False,
                                 source="test-stream"), synth

    stats, _ = run()
    assert _rows(tmp_path) == reference and stats.rows == 14
    last = sorted((tmp_path / "data").glob("*.parquet"))[-1]
    last.unlink()  # the sidecar stays: verification finds the file missing
    _, synth = run()
    assert synth.stats.rows == 2  # only the lost shard's rows were generated again
    assert _rows(tmp_path) == reference


def test_ray_actors_match_a_single_process_run_and_resume_per_file(tiny_model_dir, tmp_path, source_and_reference):
    import ray  # in the test extra: a missing install fails here, it is not skipped

    from hf_instruct_synth.ray import synthesize_with_ray

    ds, reference, _ = source_and_reference
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        out = tmp_path / "from-dataset"
        stats = synthesize_with_ray(ds, InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8), str(out),
                                    shard_rows=4, num_actors=2, num_cpus_per_actor=0.5)
        assert _rows(out) == reference and stats.rows == 14
        # parquet files in, one output shard per file; a lost shard is redone, the others are not
        files = tmp_path / "files"
        files.mkdir()
        for i in range(0, 14, 5):
            ds.select(range(i, min(i + 5, 14))).to_parquet(files / f"part-{i:03d}.parquet")
        out2 = tmp_path / "from-files"
        synthesize_with_ray(str(files), InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8), str(out2),
                            num_actors=2, num_cpus_per_actor=0.5)
        assert _rows(out2) == reference
        kept = {p.name: p.stat().st_mtime_ns for p in sorted((out2 / "data").glob("*.parquet"))[:-1]}
        lost = sorted((out2 / "data").glob("*.parquet"))[-1]
        lost.write_bytes(lost.read_bytes()[:100])  # damaged: verification names it and it is redone
        stats = synthesize_with_ray(str(files), InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8),
                                    str(out2), num_actors=2, num_cpus_per_actor=0.5)
        assert {p: (out2 / "data" / p).stat().st_mtime_ns for p in kept} == kept
        assert _rows(out2) == reference and stats.rows == 14
    finally:
        ray.shutdown()
