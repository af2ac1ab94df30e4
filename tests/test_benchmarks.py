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
    results = {k: v for k, v in figures["results"].items() if "skipped" not in v}
    assert set(results) == {"per-row generate (model card), first 2 prompts", "ours: static, pad ≤ 10%",
                            "ours: static, budget only", "ours: continuous (transformers)", "ours: native",
                            "ours: native + prompt lookup"}
    ceiling = figures["ceiling"]["tokens_per_s"]
    for name, r in results.items():
        assert r["gen"] > 0 and r["s"] > 0, name
        assert r["gen"] / r["s"] < ceiling, f"{name} beat the computed ceiling: the ceiling is wrong"
        assert r["ran"].split(",")[0] == "sdpa", (name, r["ran"])  # what actually ran is reported
    assert "Ceiling for this workload" in proc.stdout and "| ours: static, pad ≤ 10% | sdpa |" in proc.stdout


def test_gpu_bench_keeps_finished_methods_when_killed(tmp_path):
    out, md = tmp_path / "figures.json", tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--tiny", "--prompts", "4",
                           "--per-row", "1", "--json", str(out), "--write", str(md), "--die-after", "ours: static, pad",
                           "--methods", "per-row,static-sdpa,continuous"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 137
    assert set(json.loads(out.read_text())["results"]) == {"per-row generate (model card), first 1 prompts",
                                                           "ours: static, pad ≤ 10%"}
    rows = [line for line in md.read_text().splitlines() if line.startswith("| ") and "|---" not in line]
    assert len(rows) == 3 and "ours: static, pad ≤ 10%" in rows[-1]  # header row, then the two finished methods


def test_gpu_bench_wrapper_leaves_no_reference_cycle():
    import gc
    import weakref

    sys.path.insert(0, str(ROOT / "benchmarks"))
    before = os.environ.get("HF_HUB_OFFLINE")
    import gpu_bench  # sets HF_HUB_OFFLINE for its own runs: not for the rest of this test process

    if before is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    from transformers import MistralConfig, MistralForCausalLM

    model = MistralForCausalLM(MistralConfig(**gpu_bench.TINY))
    gpu_bench.stop_rows_at_targets(model, {})
    alive = weakref.ref(model)
    gc.disable()
    try:
        del model
        assert alive() is None  # freed at once, no gc pass needed
    finally:
        gc.enable()


def test_throughput_bench_smoke_with_vllm_worker(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(FAKE_VLLM)}  # a stand-in vllm (tests/fake_vllm) for the worker
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_throughput.py"), "--tiny", "--prompts", "6",
                           "--new-tokens", "8", "--vllm-python", sys.executable, "--repeats", "2"], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| (")]
    assert [r.split("|")[1].strip()[:3] for r in rows] == ["(a)", "(b)", "(c)", "(c)", "(d)", "(f)", "(f)", "(e)"]
    assert all(r.split("|")[7].strip() == "6/6" for r in rows)  # every method's outputs equal per-row generate


def test_gpu_check_runs_without_datasets(tmp_path):
    """The GPU image has no `datasets`: the check must need only torch and transformers."""
    out = tmp_path / "check.json"
    code = ("import sys, runpy; sys.modules['datasets'] = None; "
            f"sys.argv = ['gpu_check.py', '--device', 'cpu', '--rows', '8', '--new', '16', '--json', {str(out)!r}]; "
            "runpy.run_path(sys.argv[0] if False else " + repr(str(ROOT / "benchmarks" / "gpu_check.py")) +
            ", run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["results"]["sdpa"] == {**report["results"]["sdpa"], "ran": "sdpa", "ok": True,
                                         "rows_identical_to_per_row": "8/8"}
