"""Both benchmarks run, scaled down, so they cannot rot (their figures are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_VLLM = Path(__file__).parent / "fake_vllm"


def test_gpu_bench_smoke_on_cpu(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--tiny", "--prompts", "6",
                           "--per-row", "2", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    results = figures["results"]
    assert set(results) == {"per-row generate (model card), first 2 prompts", "ours: static, sdpa, pad ≤ 10%",
                            "ours: static, sdpa, budget only", "ours: continuous (transformers)"}
    ceiling = figures["ceiling"]["tokens_per_s"]
    for name, r in results.items():
        assert r["gen"] > 0 and r["s"] > 0, name
        assert r["gen"] / r["s"] < ceiling, f"{name} beat the computed ceiling: the ceiling is wrong"
    assert "Ceiling for this workload" in proc.stdout and "| ours: static, sdpa, pad ≤ 10% |" in proc.stdout


def test_throughput_bench_smoke_with_vllm_worker(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(FAKE_VLLM)}  # a stand-in vllm (tests/fake_vllm) for the worker
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_throughput.py"), "--tiny", "--prompts", "6",
                           "--new-tokens", "8", "--vllm-python", sys.executable], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| (")]
    assert [r.split("|")[1].strip()[:3] for r in rows] == ["(a)", "(b)", "(c)", "(c)", "(d)", "(e)"]
    assert all(r.split("|")[7].strip() == "6/6" for r in rows)  # every method's outputs equal per-row generate
