"""A run killed with SIGKILL resumes at the first missing shard and ends identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def _cli(out: Path) -> list[str]:
    exe = Path(sys.executable).with_name("hf-instruct-synth")
    return [str(exe), "synthesize", str(ROOT / "examples" / "data" / "paragraphs.jsonl"), "--model", "demo",
            "--output", str(out), "--shard-rows", "2", "--batch-size", "1", "--max-new-tokens", "64", "--no-progress"]


def _rows(out: Path) -> list[dict]:
    return [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = killed / ".hf-instruct-synth" / "train-00000.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    # a shard is done once its sidecar is written (after its parquet file)
    landed = {p.stem + ".parquet": (killed / "data" / (p.stem + ".parquet")).stat().st_mtime_ns
              for p in (killed / ".hf-instruct-synth").glob("*.json")}
    assert 1 <= len(landed) < 6
    assert not json.loads((killed / "manifest.json").read_text())["complete"]

    # the killed process's lock died with it: the re-run is not refused
    subprocess.run(_cli(killed), env=env, check=True, capture_output=True)
    for name, mtime in landed.items():  # finished shards are never written again
        assert (killed / "data" / name).stat().st_mtime_ns == mtime
    assert not list(killed.rglob("*.tmp"))

    clean = tmp_path / "clean"
    subprocess.run(_cli(clean), env=env, check=True, capture_output=True)
    assert _rows(killed) == _rows(clean) and len(_rows(clean)) == 12
    stats_killed = json.loads((killed / "stats.json").read_text())
    stats_clean = json.loads((clean / "stats.json").read_text())
    for key in ("rows", "pairs", "generated_tokens", "prompt_tokens"):
        assert stats_killed[key] == stats_clean[key], key
