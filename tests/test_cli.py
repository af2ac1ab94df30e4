"""The main job from the command line, as the README runs it, on the bundled demo synthesizer."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from hf_instruct_synth import DEMO_MODEL, InstructionSynthesizer
from hf_instruct_synth.cli import main
from hf_instruct_synth.inputs import InputError, load_input

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "data"


def _readme_command(prefix: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    lines = [line.strip() for line in re.findall(r"```bash\n(.*?)```", readme, re.S)[0].splitlines()]
    return shlex.split(next(line for line in lines if line.startswith(prefix)))


def _read_output(folder: Path) -> list[dict]:
    rows = []
    for shard in sorted((folder / "data").glob("*.parquet")):
        rows.extend(pq.read_table(shard).to_pylist())
    return rows


def test_readme_run_command_works_offline(tmp_path):
    cmd = _readme_command("hf-instruct-synth synthesize")
    assert "--model" in cmd and cmd[cmd.index("--model") + 1] == "demo"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    exe = Path(sys.executable).with_name("hf-instruct-synth")
    proc = subprocess.run([str(exe), *cmd[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.match(r"done: 12 rows, \d+ pairs", summary), summary
    out = tmp_path / cmd[cmd.index("--output") + 1]
    rows = _read_output(out)
    source = [json.loads(line) for line in (EXAMPLES / "paragraphs.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [s["text"] for s in source]  # every row once, in order
    assert [r["source"] for r in rows] == [s["source"] for s in source]  # input columns kept
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows"] == 12 and stats["pairs"] == sum(len(r["instruction_response_pairs"]) for r in rows)


EXAMPLES_ROWS_WITH_PAIRS = EXAMPLES_EXACT_SPANS = 0.8  # issue 3's bar


def test_demo_on_the_example_paragraphs():
    """Real prose it never saw: items parse and answers are copied spans (figures in
    hf_instruct_synth/demo/README.md)."""
    from hf_instruct_synth.demo.train import evaluate, example_texts

    result = evaluate(DEMO_MODEL, example_texts())
    assert result["rows_with_pairs"] >= EXAMPLES_ROWS_WITH_PAIRS, result
    assert result["exact_spans"] >= EXAMPLES_EXACT_SPANS, result


def test_demo_on_held_out_generated_contexts():
    import random

    from hf_instruct_synth.demo.train import SEED, evaluate, make_text

    rng = random.Random(SEED + 1)  # the held-out seed; training used SEED
    result = evaluate(DEMO_MODEL, [make_text(rng) for _ in range(40)])
    assert result["rows_with_pairs"] >= 0.9, result
    assert result["exact_spans"] >= 0.8, result
    assert result["pairs_per_row"] >= 1.5, result


def test_resume_skips_finished_shards_and_refuses_other_parameters(tmp_path, capsys):
    args = ["synthesize", str(EXAMPLES / "paragraphs.jsonl"), "--model", "demo", "--output", str(tmp_path / "o"),
            "--shard-rows", "5", "--max-new-tokens", "48", "--no-progress"]
    assert main(args) == 0
    shards = sorted((tmp_path / "o" / "data").glob("*.parquet"))
    assert [s.name for s in shards] == ["train-00000.parquet", "train-00001.parquet", "train-00002.parquet"]
    first = _read_output(tmp_path / "o")
    # lose the last shard, as a killed run would; the re-run writes only that one
    shards[-1].unlink()
    mtimes = {s.name: s.stat().st_mtime_ns for s in shards[:2]}
    assert main(args) == 0
    assert {s.name: s.stat().st_mtime_ns for s in shards[:2]} == mtimes
    assert _read_output(tmp_path / "o") == first
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["rows"] == 12
    capsys.readouterr()
    assert main(args[:-3] + ["--max-new-tokens", "40", "--no-progress"]) == 2
    assert "different model or generation parameters" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "missing.jsonl: no such file or folder"),
    ([str(ROOT / "pyproject.toml")], "unknown format '.toml'"),
    ([str(EXAMPLES / "paragraphs.jsonl"), "--text-column", "body"], "no column 'body'; columns present: ['text', 'source']"),
])
def test_user_errors_are_one_line_with_nonzero_exit(tmp_path, capsys, args, message):
    assert main(["synthesize", *args, "--model", "demo", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_output_folder_not_empty_is_refused(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main(["synthesize", str(EXAMPLES / "paragraphs.txt"), "--model", "demo", "--output",
                     str(tmp_path / "o"), *extra]) == 2
        assert "holds files and no manifest.json of a run (notes.txt)" in capsys.readouterr().err
        assert (tmp_path / "o" / "notes.txt").read_text() == "keep me" and len(list((tmp_path / "o").iterdir())) == 1


def test_unreachable_model_offline_points_to_demo(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["synthesize", str(EXAMPLES / "paragraphs.txt"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "could not load the model 'instruction-pretrain/instruction-synthesizer'" in err and "--model demo" in err


def test_inputs_every_format(tmp_path):
    texts = ["one text.", "two texts here.", "three."]
    ds = Dataset.from_dict({"text": texts})
    ds.to_json(tmp_path / "a.jsonl")
    ds.to_parquet(tmp_path / "a.parquet")
    ds.to_csv(tmp_path / "a.csv")
    (tmp_path / "a.txt").write_text("\n\n".join(texts) + "\n\n\n")  # paragraphs; blank lines make no rows
    ds.save_to_disk(tmp_path / "saved")
    (tmp_path / "folder").mkdir()
    ds.select([0, 1]).to_parquet(tmp_path / "folder" / "part-0.parquet")
    ds.select([2]).to_parquet(tmp_path / "folder" / "part-1.parquet")
    for name in ("a.jsonl", "a.parquet", "a.csv", "a.txt", "saved", "folder"):
        assert load_input(str(tmp_path / name))["text"] == texts, name
    (tmp_path / "lines.txt").write_text("one text.\n\ntwo texts here.\n   \nthree.\n")
    assert load_input(str(tmp_path / "lines.txt"), sample_by="line")["text"] == texts
    assert load_input(str(tmp_path / "lines.txt"), sample_by="document")["text"] == [
        (tmp_path / "lines.txt").read_text()]
    with pytest.raises(InputError, match="no such dataset on the Hub"):
        load_input("no-such-user/no-such-dataset-xyz")


def test_quickstart_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = json.loads((EXAMPLES / "paragraphs.jsonl").read_text().splitlines()[0])["text"]
    assert "Q: " in proc.stdout and first in proc.stdout.split("pre-training text:")[1]


def test_demo_model_is_small_and_documented():
    folder = Path(DEMO_MODEL)
    assert (folder / "model.safetensors").stat().st_size < 15 * 2**20
    assert "demonstration" in (folder / "README.md").read_text()
    synth = InstructionSynthesizer(model=DEMO_MODEL)
    assert synth.fingerprint() != InstructionSynthesizer(model=DEMO_MODEL, max_new_tokens=399).fingerprint()
    assert not synth.is_loaded  # fingerprinted from a folder digest, without loading the model


def test_cli_push_to_hub_publishes_what_load_dataset_reads_back(hub, tmp_path, monkeypatch, capsys):
    from huggingface_hub import DatasetCard

    monkeypatch.chdir(tmp_path)
    args = ["synthesize", str(EXAMPLES / "paragraphs.jsonl"), "--model", "demo", "--push-to-hub", "user/paragraphs-aug",
            "--max-new-tokens", "64", "--no-progress"]
    assert main(args + ["--license", "cc0-1.0", "--private"]) == 0
    assert "pushed: 12 rows to user/paragraphs-aug" in capsys.readouterr().out
    local = _read_output(tmp_path / ".hf-instruct-synth" / "user__paragraphs-aug")
    from datasets import load_dataset

    back = load_dataset("user/paragraphs-aug", split="train").to_list()
    assert back == local and len(back) == 12
    stats = json.loads((tmp_path / ".hf-instruct-synth" / "user__paragraphs-aug" / "stats.json").read_text())
    card = DatasetCard.load("user/paragraphs-aug", repo_type="dataset")
    assert card.data.license == "cc0-1.0" and hub.state.repos["user/paragraphs-aug"].private
    assert f"| pairs | {stats['pairs']:,} |" in card.text
    assert f"| generated tokens *(run)* | {stats['generated_tokens']:,} |" in card.text
    # the Hub holds the run's own shard files, byte for byte
    local = sorted((tmp_path / ".hf-instruct-synth" / "user__paragraphs-aug" / "data").glob("*.parquet"))
    files = hub.state.repos["user/paragraphs-aug"].files
    assert local and all(files[f"data/{p.name}"] == p.read_bytes() for p in local)
    assert "demo synthesizer" in card.text and os.environ["HF_TOKEN"] not in card.text


def test_cli_push_without_a_known_license_says_other_and_warns(hub, tmp_path, monkeypatch, capsys):
    """Issue 4's command as written: local data, no --license."""
    from huggingface_hub import DatasetCard

    monkeypatch.chdir(tmp_path)
    assert main(["synthesize", str(EXAMPLES / "paragraphs.txt"), "--model", "demo", "--push-to-hub", "user/txt-aug",
                 "--max-new-tokens", "48", "--no-progress"]) == 0
    assert "license is unknown" in capsys.readouterr().err
    card = DatasetCard.load("user/txt-aug", repo_type="dataset")
    assert card.data.license == "other" and "license was not known" in card.text


def test_cli_rounds_produces_templified_chains(tmp_path):
    out = tmp_path / "o"
    assert main(["synthesize", str(EXAMPLES / "paragraphs.jsonl"), "--model", "demo", "--output", str(out),
                 "--rounds", "2", "--max-new-tokens", "96", "--seed", "5", "--no-progress"]) == 0
    chains = _read_output(out)
    assert [c["rows"] for c in chains] == [[i, i + 6] for i in range(6)]
    texts = [json.loads(line)["text"] for line in (EXAMPLES / "paragraphs.jsonl").read_text().splitlines()]
    for chain in chains:
        assert [link["text"] for link in chain["links"]] == [texts[i] for i in chain["rows"]]
        assert chain["links"][0]["inherits"] is False
        assert chain["links"][1]["inherits"] == bool(chain["links"][0]["instruction_response_pairs"])
        assert chain["augmented_texts"] and len(chain["template_modes"]) == len(chain["augmented_texts"])
        for link in chain["links"]:
            assert any(link["text"] in t for t in chain["augmented_texts"])
    assert any(c["links"][1]["inherits"] for c in chains)
    assert json.loads((out / "manifest.json").read_text())["job"]["rounds"] == 2


def test_license_is_taken_from_the_source_datasets_card(hub, tmp_path, monkeypatch, capsys):
    import io
    import sys as _sys

    import pyarrow as pa

    _sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import Repo

    buf = io.BytesIO()
    pq.write_table(pa.table({"text": ["The bridge was built in 1820.", "A ship left the harbour."]}), buf)
    repo = Repo(False)
    repo.files["README.md"] = b"---\nlicense: apache-2.0\n---\n# src\n"
    repo.files["data/train-00000.parquet"] = buf.getvalue()
    hub.state.repos["user/licensed-src"] = repo
    monkeypatch.chdir(tmp_path)
    assert main(["synthesize", "user/licensed-src", "--model", "demo", "--push-to-hub", "user/licensed-aug",
                 "--max-new-tokens", "16", "--no-progress"]) == 0
    assert "license is unknown" not in capsys.readouterr().err
    from huggingface_hub import DatasetCard

    card = DatasetCard.load("user/licensed-aug", repo_type="dataset")
    assert card.data.license == "apache-2.0" and card.data.source_datasets == ["user/licensed-src"]
    assert f"@ `{repo.sha}`" in card.text  # the source revision the run read


def test_rejected_token_stops_before_any_shard(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    hub.state.tokens.clear()
    assert main(["synthesize", str(EXAMPLES / "paragraphs.jsonl"), "--model", "demo", "--push-to-hub", "user/nope",
                 "--no-progress"]) == 2
    assert "rejected the token" in capsys.readouterr().err
    assert not (tmp_path / ".hf-instruct-synth").exists()  # nothing generated, nothing written


def test_push_command_publishes_a_finished_run(hub, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["synthesize", str(EXAMPLES / "paragraphs.jsonl"), "--model", "demo", "--output", str(out),
                 "--max-new-tokens", "16", "--limit", "4", "--engine", "static", "--no-progress"]) == 0
    assert main(["push", str(out), "user/pushed", "--license", "mit", "--no-progress"]) == 0
    assert "pushed: 4 rows" in capsys.readouterr().out
    files = hub.state.repos["user/pushed"].files
    assert files["data/train-00000.parquet"] == (out / "data" / "train-00000.parquet").read_bytes()
    assert main(["push", str(tmp_path), "user/pushed"]) == 2  # not a run's folder
    assert "not an output folder" in capsys.readouterr().err


def test_ray_actors_from_the_command_line(tmp_path):
    import ray

    out = tmp_path / "o"
    try:
        assert main(["synthesize", str(EXAMPLES / "paragraphs.jsonl"), "--model", "demo", "--output", str(out),
                     "--max-new-tokens", "16", "--limit", "4", "--shard-rows", "2", "--ray-actors", "2",
                     "--speculative", "prompt_lookup", "--no-progress"]) == 0
    finally:
        ray.shutdown()
    rows = _read_output(out)
    texts = [json.loads(line)["text"] for line in (EXAMPLES / "paragraphs.jsonl").read_text().splitlines()][:4]
    assert [r["text"] for r in rows] == texts and all(r["augmented_texts"] for r in rows)
