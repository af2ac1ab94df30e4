"""Mutation testing (mutmut) over the modules where a wrong line changes which rows, pairs or files come out.

Each module is mutated in a scratch copy of the repository, against the test files that aim
at it (so a run takes minutes on 2 cores, not hours); the score and every surviving mutant
are printed. A survivor is either equivalent (no behaviour changed) or a missing test.

    pip install -e ".[dev]"
    python tests/mutation.py format batching        # modules by name; default: all of MODULES
    python tests/mutation.py shards --show-survivors
    python tests/mutation.py synthesizer --only 'hf_instruct_synth.synthesizer.x*encode_prompt*'   # some functions

Not part of the test suite (CI runs the tests, not this).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: module -> the test files aimed at it
MODULES = {
    "format": ["tests/test_format.py"],
    "batching": ["tests/test_batching.py"],
    # test_resume.py kills the CLI in a subprocess, which imports the package unmutated: no use here
    "shards": ["tests/test_output_dir.py"],
    "templify": ["tests/test_rounds.py", "tests/test_augmented.py"],
    "card": ["tests/test_card.py"],
    # hub.py: its tests talk to conftest's Hub server; in each forked mutant run conftest starts the
    # child's own server (HubServer.serve_here), so a child never reaches the parent's state
    "hub": ["tests/test_hub.py", "tests/test_inputs.py", "-k", "hub"],
    "synthesizer": ["tests/test_synthesizer.py", "tests/test_inputs.py", "tests/test_bad_input.py",
                    "tests/test_fingerprint.py", "tests/test_rounds.py", "-k", "not test_hub_"],  # Hub tests: slow per mutant
    "engines/native": ["tests/test_native_engine.py"],
}


def run(module: str, show: bool, only: list[str] | None = None) -> tuple[int, int, list[str]]:
    tests = MODULES[module]
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".git", ".venv*", "mutants", "build", "dist",
                                                                   "*.egg-info", "__pycache__", ".pytest_cache",
                                                                   ".hypothesis", "out"))
        pyproject = (work / "pyproject.toml").read_text()
        pyproject = pyproject.replace('addopts = "-ra --doctest-modules"', 'addopts = "-ra -p no:cacheprovider"')
        pyproject += ("\n[tool.mutmut]\nsource_paths = [\"hf_instruct_synth\"]\n"
                      f"only_mutate = [\"hf_instruct_synth/{module}.py\"]\n"
                      f"pytest_add_cli_args_test_selection = {tests!r}\n".replace("'", '"'))
        (work / "pyproject.toml").write_text(pyproject)
        # mutmut forks each mutant's test run from a process that has run torch: with OpenMP's
        # thread pool alive the children crash (SIGSEGV); single-threaded, they do not
        short_tmp = tempfile.mkdtemp(prefix="mut", dir="/tmp")  # multiprocessing's socket paths must stay short
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               "TMPDIR": short_tmp}  # each mutant's temporary folder (conftest) goes in this one
        ran = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "2", *(only or [])], cwd=work,
                             capture_output=True, text=True, env=env)
        shutil.rmtree(short_tmp, ignore_errors=True)
        out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work,
                             capture_output=True, text=True).stdout
        status = {k: v for k, v in re.findall(r"^\s*(\S+): (\w+)", out, re.M)
                  if not only or any(fnmatch.fnmatch(k, pattern) for pattern in only)}
        killed = sum(1 for v in status.values() if v in ("killed", "timeout", "caught_by_type_check"))
        counts: dict[str, int] = {}
        for v in status.values():
            counts[v] = counts.get(v, 0) + 1
        print(f"{module}: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())), flush=True)
        others = sorted(k for k, v in status.items() if v not in ("killed", "timeout", "caught_by_type_check", "survived"))
        if others:
            print(f"{module}: neither killed nor survived: {', '.join(others)}", flush=True)
        survivors = sorted(k for k, v in status.items() if v == "survived")
        if not killed:  # nothing ran: the clean test run failed, or mutmut did; say why
            print(f"{module}: mutmut ran no mutant; its output ends:\n{(ran.stdout + ran.stderr)[-3000:]}",
                  file=sys.stderr)
        if show:
            for name in survivors:
                diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work,
                                      capture_output=True, text=True).stdout
                print(diff)
        return killed, len(status), survivors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", default=list(MODULES), choices=list(MODULES) + [[]])
    ap.add_argument("--show-survivors", action="store_true", help="print each surviving mutant's diff")
    ap.add_argument("--only", nargs="+", metavar="PATTERN",
                    help="mutants of these functions only, e.g. 'hf_instruct_synth.card.x__merge_body__*'")
    args = ap.parse_args(argv)
    for module in args.modules or list(MODULES):
        killed, total, survivors = run(module, args.show_survivors, args.only)
        score = killed / total if total else 0.0
        print(f"{module}: {killed}/{total} mutants killed ({score:.0%}); survivors: {', '.join(survivors) or 'none'}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
