"""The output folder as a verified shard store: every fault ends in the clean rows or a one-line refusal."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset, IterableDataset, load_dataset

from hf_instruct_synth import InstructionSynthesizer
from hf_instruct_synth.cli import main
from hf_instruct_synth.run import run_to_dir
from hf_instruct_synth.shards import OutputDirError, ShardStore
from hf_instruct_synth.testing import ScriptedEngine, scripted_pairs

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"Bridge {i} spans the river. It was built in year {1800 + i}." for i in range(10)]


def _synth() -> InstructionSynthesizer:
    return InstructionSynthesizer(model="unused/name", engine=ScriptedEngine(), max_new_tokens=64)


def _run(out: Path, texts=TEXTS, **kw):
    kw.setdefault("shard_rows", 3)
    kw.setdefault("progress", False)
    kw.setdefault("source", "test-input")
    lines: list[str] = []
    outcome = run_to_dir(Dataset.from_dict({"text": list(texts), "n": list(range(len(texts)))}), _synth(), out,
                         log=lines.append, **kw)
    return outcome, lines


def _rows(out: Path) -> list[dict]:
    return load_dataset(str(out), split="train").to_list()


def _check_clean(out: Path, texts=TEXTS) -> None:
    rows = _rows(out)
    assert [r["text"] for r in rows] == list(texts) and [r["n"] for r in rows] == list(range(len(texts)))
    for r in rows:  # each row holds the pairs of its own text
        assert r["instruction_response_pairs"] == scripted_pairs(r["text"])


def test_clean_run_is_a_dataset_in_input_order(tmp_path):
    outcome, _ = _run(tmp_path / "nested" / "new" / "o")  # parents are made
    _check_clean(tmp_path / "nested" / "new" / "o")
    tmp_path = tmp_path / "nested" / "new"
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["shards"] == 4 and manifest["rows"] == 10
    assert manifest["about"]["generation"]["max_new_tokens"] == 64 and manifest["finished"]
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["rows"] == 10 and stats["pairs"] == sum(len(scripted_pairs(t)) for t in TEXTS)
    assert outcome.shards_written == 4 and outcome.complete and outcome.total.rows == 10
    sidecar = json.loads((tmp_path / "o" / ".hf-instruct-synth" / "train-00001.json").read_text())
    assert (sidecar["start"], sidecar["stop"], sidecar["rows"]) == (3, 6, 3)
    assert sidecar["sha256"] == hashlib.sha256((tmp_path / "o" / "data" / "train-00001.parquet").read_bytes()).hexdigest()
    assert sidecar["worker"] == 0 and sidecar["placement"] == {"device": None, "gpu": None, "rank": None}
    assert sidecar["stats"]["rows"] == 3 and sidecar["file"] == "data/train-00001.parquet"
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"  # UTC, ISO 8601
    assert re.fullmatch(stamp, manifest["started"]) and re.fullmatch(stamp, manifest["finished"])
    assert manifest["started"] <= manifest["finished"] and manifest["about"]["hardware"] == "CPU"


def test_a_new_folder_is_marked_unfinished_from_the_start(tmp_path):
    """A kill before the first shard leaves a manifest that says the run is not complete (so it is never pushed)."""
    from hf_instruct_synth.shards import ShardStore as Store

    store = Store(tmp_path / "o", {"input": "x", "rows": 10}, about={"note": "kept"}).open()
    try:
        manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    finally:
        store.close()
    assert manifest["complete"] is False and manifest["shards"] == 0 and "finished" not in manifest
    assert manifest["job"] == {"input": "x", "rows": 10} and manifest["about"] == {"note": "kept"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["started"]) and not store.resumed
    again = Store(tmp_path / "o", {"input": "x", "rows": 10}, about={"note": "another"}).open()
    try:  # the same job again: a resume, which keeps what the first run recorded
        assert again.resumed and again.about == {"note": "kept"}
    finally:
        again.close()
    assert Store(tmp_path / "p", {}, split="Test_2.v1").split == "Test_2.v1"
    with pytest.raises(ValueError, match=r"^split names may hold letters, digits, '_' and '\.', got 'a-b'$"):
        Store(tmp_path / "p", {}, split="a-b")


@pytest.mark.parametrize("damage", ["truncate", "swap", "delete_file", "garbage_sidecar", "foreign_sidecar",
                                    "extra_bytes", "flip_byte", "wrong_range", "wrong_rows", "wrong_index"])
def test_damaged_shards_are_named_and_regenerated(tmp_path, damage):
    out = tmp_path / "o"
    _run(out)
    clean = {p.name: p.read_bytes() for p in (out / "data").glob("*.parquet")}
    shard, side = out / "data" / "train-00002.parquet", out / ".hf-instruct-synth" / "train-00002.json"
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:50])
    elif damage == "swap":
        shutil.copy(out / "data" / "train-00000.parquet", shard)
    elif damage == "delete_file":
        shard.unlink()
    elif damage == "garbage_sidecar":
        side.write_text("{not json")
    elif damage == "foreign_sidecar":
        shutil.copy(out / ".hf-instruct-synth" / "train-00001.json", side)
    elif damage == "extra_bytes":
        shard.write_bytes(shard.read_bytes() + b"x")
    elif damage == "flip_byte":  # same size: only the checksum can tell
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    else:  # a sidecar edited to another range, row count or index, the file left as it is
        side_data = json.loads(side.read_text())
        field, value = {"wrong_range": ("start", 0), "wrong_rows": ("rows", 2), "wrong_index": ("index", 3)}[damage]
        side_data[field] = value
        if damage == "wrong_range":
            side_data["stop"] = 3
        side.write_text(json.dumps(side_data))
    outcome, lines = _run(out)
    assert outcome.shards_written == 1 and outcome.shards_before == 3
    reason = {"truncate": r"its file has 50 bytes, \d+ were written", "swap": r"its file has \d+ bytes, \d+ were written",
              "delete_file": "its file is missing", "garbage_sidecar": r"its sidecar is unreadable \(JSONDecodeError\)",
              "foreign_sidecar": "its sidecar belongs to another shard", "wrong_index": "its sidecar belongs to another shard",
              "extra_bytes": r"its file has (\d+) bytes, \d+ were written",
              "flip_byte": "its file's sha256 differs from the one written",  # only the checksum sees it
              "wrong_range": r"it holds rows 0\.\.3, not those of shard 2", "wrong_rows": "its file holds 3 rows, 2 were written"}
    assert len(lines) == 1 and re.fullmatch(rf"shard 2 \(data/train-00002\.parquet\): {reason[damage]}; generating it again",
                                            lines[0]), lines
    _check_clean(out)
    assert {p.name: p.read_bytes() for p in (out / "data").glob("*.parquet")} == clean


def test_a_shard_without_sidecar_is_rewritten_and_a_finished_one_is_never_touched(tmp_path):
    out = tmp_path / "o"
    _run(out)
    (out / ".hf-instruct-synth" / "train-00003.json").unlink()  # killed between the shard and its sidecar
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "data").glob("*.parquet") if "00003" not in p.name}
    outcome, _ = _run(out)
    assert outcome.shards_written == 1
    assert {p.name: p.stat().st_mtime_ns for p in (out / "data").glob("*.parquet") if "00003" not in p.name} == mtimes
    _check_clean(out)


def test_a_write_that_dies_halfway_leaves_no_partial_shard(tmp_path, monkeypatch):
    out = tmp_path / "o"
    real = pq.write_table

    def dying(table, where, *a, **kw):
        where.write(b"PAR1 partial bytes")
        raise KeyboardInterrupt  # as a kill would, mid-write

    monkeypatch.setattr(pq, "write_table", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(out)
    assert not (out / "data" / "train-00000.parquet").exists()
    assert not list((out / ".hf-instruct-synth").glob("*.json"))
    monkeypatch.setattr(pq, "write_table", real)
    _run(out)
    _check_clean(out)
    assert not list(out.rglob("*.tmp"))


def test_an_unfinished_run_is_marked_incomplete(tmp_path):
    from hf_instruct_synth.shards import ShardStore as Store

    out = tmp_path / "o"
    _run(out)
    store = Store(out, json.loads((out / "manifest.json").read_text())["job"]).open()
    try:
        (out / "data" / "train-00003.parquet").unlink()
        store.verify()
        store.finalize(expected_shards=4)
    finally:
        store.close()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["shards"] == 3


def test_files_inside_data_that_are_not_shards_are_foreign(tmp_path):
    out = tmp_path / "o"
    _run(out)
    (out / "data" / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match=r"did not write \(data/notes.txt\)"):
        _run(out, overwrite=True)
    (out / "data" / "notes.txt").unlink()
    (out / "data" / "sub").mkdir()
    with pytest.raises(OutputDirError, match=r"did not write \(data/sub\)"):
        _run(out, overwrite=True)
    (out / "data" / "sub").rmdir()
    (out / ".hf-instruct-synth" / "train-00009.json.tmp").write_text("{")  # ours: a cut-off sidecar write
    outcome, _ = _run(out)
    assert outcome.shards_written == 0 and not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("lost", ["train-00003.parquet", "train-00000.parquet"])
def test_a_resumed_stream_keeps_the_first_shards_schema(tmp_path, lost):
    """Resumed with a shard to write again (the last, or the first, whose tags are all null): it
    takes the run's schema from the shards already there, not from its own rows."""
    def rows():
        for i, t in enumerate(TEXTS):
            yield {"text": t, "tag": None if i < 4 else f"tag-{i}"}

    out = tmp_path / "o"
    run = lambda: run_to_dir(IterableDataset.from_generator(rows), _synth(), out, shard_rows=3,  # noqa: E731
                             progress=False, source="stream", log=lambda _: None)
    run()
    last = out / "data" / lost
    last.unlink()
    outcome = run()
    assert outcome.shards_written == 1
    assert {str(pq.read_schema(p).field("tag").type) for p in (out / "data").glob("*.parquet")} == {"string"}
    assert _rows(out)[-1]["tag"] == "tag-9"


def test_already_complete_generates_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    _run(out)
    outcome, lines = _run(out)
    assert outcome.shards_written == 0 and outcome.this_run.rows == 0 and outcome.total.rows == 10 and not lines


def test_overwrite_removes_only_our_files_and_refuses_foreign_ones(tmp_path):
    out = tmp_path / "o"
    _run(out)
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    with pytest.raises(OutputDirError, match=r"files this tool did not write \(notes.txt, sub\)"):
        _run(out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and len(list((out / "data").glob("*.parquet"))) == 4
    (out / "notes.txt").unlink()
    (out / "sub").rmdir()
    outcome, lines = _run(out, texts=TEXTS[:4], overwrite=True)
    assert outcome.shards_written == 2 and "removed the earlier run's" in lines[0]
    _check_clean(out, TEXTS[:4])
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000.parquet", "train-00001.parquet"]


def test_current_folder_and_input_folder_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    for out in (".", str(tmp_path), str(tmp_path.parent)):
        with pytest.raises(OutputDirError, match="is the current folder or holds it"):
            _run(Path(out), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "corpus.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(OutputDirError, match="holds the input"):
        _run(tmp_path / "in", input_paths=(str(tmp_path / "in" / "corpus.jsonl"),))
    _run(tmp_path / "beside", input_paths=(str(tmp_path / "in" / "corpus.jsonl"),))  # an input elsewhere: fine
    _check_clean(tmp_path / "beside")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputDirError, match=r"^--output .*a-file is a file, not a folder$"):
        _run(tmp_path / "a-file")


def test_a_second_writer_is_refused_naming_the_folder_and_process(tmp_path):
    out = tmp_path / "o"
    first = ShardStore(out, {"input": "a"}).open()
    try:
        with pytest.raises(OutputDirError, match=rf"{out} is being written by process {os.getpid()}"):
            _run(out)
    finally:
        first.close()
    _run(out, overwrite=True)  # the lock is gone with its holder
    _check_clean(out)


def test_another_job_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "o"
    _run(out)
    with pytest.raises(OutputDirError, match="different shard size"):
        _run(out, shard_rows=4)
    with pytest.raises(OutputDirError, match="different input data"):
        _run(out, source="another-input")
    with pytest.raises(OutputDirError, match=rf"^{re.escape(str(out))} holds a run with a different input data, "
                                             r"shard size; re-run its own command to resume it, use another --output, "
                                             r"or pass --overwrite to start over$"):
        _run(out, source="another-input", shard_rows=4)  # every difference named, in words
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["job"]["templify_seed"]  # a record without a field this job has (an older version's)
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputDirError, match="holds a run with a different seed;"):
        _run(out)


def test_a_damaged_manifest_or_a_lost_sidecar_is_named(tmp_path):
    from hf_instruct_synth.shards import ShardStore as Store

    out = tmp_path / "o"
    _run(out)
    (out / ".hf-instruct-synth" / "train-00001.json").write_text("{not json")
    store = Store(out, {})
    assert sorted(store.finished()) == [0, 2, 3]  # an unreadable record hides only its own shard
    good = json.loads((out / "manifest.json").read_text())
    for bad in ("[]", '{"job": 3}', "{not json"):
        (out / "manifest.json").write_text(bad)
        with pytest.raises(OutputDirError, match=rf"^{re.escape(str(out / 'manifest.json'))} is damaged \(.+\); this "
                                                 r"folder's run cannot be resumed: move it away or pick another "
                                                 r"--output$"):
            _run(out)
    (out / "manifest.json").write_text(json.dumps(good))
    assert Store(out, {}).todo(total_rows=10, shard_rows=3) == [(1, 3, 6)]  # only the unrecorded shard is to do
    verified = Store(out, {}).verify(3, 10)
    assert sorted(verified) == [0, 2, 3] and [verified[i].rows for i in (0, 2, 3)] == [3, 3, 1]
    assert verified[2].file == "data/train-00002.parquet" and (verified[2].start, verified[2].stop) == (6, 9)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(7):
        (many / f"notes-{i}.txt").write_text("mine")
    with pytest.raises(OutputDirError, match=r"holds files and no manifest\.json of a run \(notes-0\.txt, notes-1\.txt, "
                                             r"notes-2\.txt, notes-3\.txt, notes-4\.txt and 2 more\); pick an empty or "
                                             r"new folder for --output \(--overwrite removes only a run's own files\)$"):
        _run(many, overwrite=True)


def test_shards_without_a_manifest_are_not_trusted(tmp_path):
    out = tmp_path / "o"
    _run(out)
    (out / "manifest.json").unlink()
    with pytest.raises(OutputDirError, match="holds shards but no manifest.json"):
        _run(out)


def test_streamed_shards_share_one_schema_when_early_rows_lack_a_value(tmp_path):
    def rows():
        for i, t in enumerate(TEXTS):
            yield {"text": t, "tag": None if i < 4 else f"tag-{i}"}

    stream = IterableDataset.from_generator(rows)
    out = tmp_path / "o"
    run_to_dir(stream, _synth(), out, shard_rows=3, progress=False, source="stream", log=lambda _: None)
    schemas = {str(pq.read_schema(p).field("tag").type) for p in (out / "data").glob("*.parquet")}
    assert schemas == {"string"}
    whole = {pq.read_schema(p).to_string(show_schema_metadata=True) for p in (out / "data").glob("*.parquet")}
    assert len(whole) == 1  # metadata too: every shard records the same datasets features ...
    for p in (out / "data").glob("*.parquet"):  # ... and they match the Arrow types
        recorded = json.loads(pq.read_schema(p).metadata[b"huggingface"])["info"]["features"]
        assert recorded["tag"] == {"dtype": "string", "_type": "Value"} and recorded["text"]["dtype"] == "string"
    back = _rows(out)
    assert [r["tag"] for r in back] == [None] * 4 + [f"tag-{i}" for i in range(4, 10)]
    assert [r["text"] for r in back] == TEXTS


def test_model_identity_does_not_change_when_the_model_appears_in_the_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from hf_instruct_synth.loading import identity, resolve_commit

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    before = InstructionSynthesizer(model="org/synth").fingerprint()
    ref = tmp_path / "models--org--synth" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("a" * 40)
    assert InstructionSynthesizer(model="org/synth").fingerprint() == before
    assert identity("org/synth") == "hub:org/synth@main" and resolve_commit("org/synth", None) == "a" * 40
    # a resume keeps the commit the first run resolved, whatever main points to now
    store = ShardStore(tmp_path / "o", {"input": "x", "model_commit": "b" * 40}).open()
    store.close()
    again = ShardStore(tmp_path / "o", {"input": "x", "model_commit": "a" * 40}).open()
    again.close()
    assert again.job["model_commit"] == "b" * 40


@pytest.mark.parametrize("args, message", [
    (["--shard-rows", "0"], "argument --shard-rows: must be at least 1, got 0"),
    (["--shard-rows", "-5"], "argument --shard-rows: must be at least 1, got -5"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
    (["--num-gpus", "0"], "argument --num-gpus: must be at least 1, got 0"),
    (["--ray-actors", "0"], "argument --ray-actors: must be at least 1, got 0"),
    (["--limit", "-1"], "argument --limit: must be at least 0, got -1"),
    (["--max-pad-fraction", "-1"], "argument --max-pad-fraction: must be from 0 to 1, got -1.0"),
    (["--max-pad-fraction", "1.5"], "argument --max-pad-fraction: must be from 0 to 1, got 1.5"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: must be at least 1, got 0"),
    (["--shard-rows", "ten"], "argument --shard-rows: expected a whole number, got 'ten'"),
])
def test_every_bad_count_is_one_line_at_parse_time(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(["synthesize", str(ROOT / "examples" / "data" / "paragraphs.jsonl"), "--model", "demo", "--output",
              str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
