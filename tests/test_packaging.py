"""The wheel holds every file the package reads at run time (CI also installs it and runs the main job)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_every_package_file(tmp_path):
    # as `python -m build` makes it from a fresh clone: the sdist first, then the wheel from the sdist;
    # no egg-info or build folder of an editable install may fill the gaps
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("*.egg-info", "build", "dist", ".venv*", ".git",
                                                             "__pycache__", ".pytest_cache", ".hypothesis"))
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("hf_instruct_synth-*.whl"))
    inside = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "hf_instruct_synth"
    tree = {p.relative_to(ROOT).as_posix() for p in package.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert tree and not tree - inside, f"missing from the wheel: {sorted(tree - inside)}"
    assert "hf_instruct_synth/templates/default.json" in inside
