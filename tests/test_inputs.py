"""Every input a user brings: mixed types, markup, encodings, empty inputs, split folders, Hub subsets."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, load_dataset

from hf_instruct_synth import InstructionSynthesizer
from hf_instruct_synth.cli import main
from hf_instruct_synth.inputs import EmptyInputError, InputError, open_input, text_problem
from hf_instruct_synth.testing import ScriptedEngine, scripted_pairs

MIXED = ['{"text": "The king built a bridge. It stood for years."}', '{"text": 42}',
         '{"text": "A river <s> flows </s> north <pad>. Then </CON> ends."}', '{"text": null}',
         '{"text": ["a", "list"]}', '{"text": {"a": 1}}', '{"text": "Last text here. The end came."}']
GOOD = {0: "The king built a bridge. It stood for years.",
        2: "A river <s> flows </s> north <pad>. Then </CON> ends.", 6: "Last text here. The end came."}


def _scripted(**kw) -> InstructionSynthesizer:
    return InstructionSynthesizer(model="unused/name", engine=ScriptedEngine(), max_new_tokens=64, **kw)


def _run_cli(tmp_path, *args) -> int:
    return main(["synthesize", *args, "--model", "demo", "--max-new-tokens", "8", "--no-progress"])


@pytest.mark.parametrize("streaming", [False, True])
def test_mixed_type_column_names_the_row_or_skips_every_bad_kind(tmp_path, capsys, streaming):
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(MIXED) + "\n")
    extra = ["--streaming"] if streaming else []
    assert _run_cli(tmp_path, str(src), "--output", str(tmp_path / "a"), *extra) == 2
    err = capsys.readouterr().err
    assert "row 1: column 'text' holds int (42), not a string" in err and len(err.strip().splitlines()) == 1
    assert _run_cli(tmp_path, str(src), "--output", str(tmp_path / "b"), "--on-invalid", "skip", *extra) == 0
    out = load_dataset(str(tmp_path / "b"), split="train")
    assert out.features["text"].dtype == "string"  # never JSON text, never an extension type
    assert out["text"] == [GOOD.get(i) for i in range(len(MIXED))]  # good rows byte-identical, bad ones null
    stats = json.loads((tmp_path / "b" / "stats.json").read_text())
    assert stats["rows_skipped"] == 4 and stats["rows"] == 7 and stats["rows_with_markers"] == 1


def test_mixed_types_through_ds_map_reach_the_transform_as_values(tmp_path):
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(MIXED) + "\n")
    ds = open_input(str(src)).dataset
    with pytest.raises(ValueError, match="row 1: column 'text' holds int"):
        ds.map(_scripted(), batched=True, with_indices=True)
    out = ds.map(_scripted(on_invalid="skip"), batched=True)
    for i, pairs in enumerate(out["instruction_response_pairs"]):
        assert pairs == (scripted_pairs(GOOD[i]) if i in GOOD else [])


def test_lone_surrogate_is_a_named_bad_row():
    texts = ["Fine text. Really fine.", "bad \ud800 text. More here."]
    with pytest.raises(ValueError, match=r"row 1 of the batch.*not valid Unicode \(a lone surrogate at character 4\)"):
        _scripted()({"text": texts})
    synth = _scripted(on_invalid="skip")
    out = synth({"text": texts})
    assert out["instruction_response_pairs"] == [scripted_pairs(texts[0]), []] and synth.stats.rows_skipped == 1
    assert text_problem(texts[1]) and text_problem(texts[0]) is None


def test_markers_in_a_text_never_become_control_tokens(tiny_model_dir):
    synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8)
    synth.load()
    tok = synth._loaded["tokenizer"]
    text = "Web page <s> with </s> and <pad> plus </CON> and <QUE> q <ANS> a </END> <unk>."
    ids = synth.encode_prompt(text)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert tok.eos_token_id not in ids and tok.pad_token_id not in ids and tok.unk_token_id not in ids
    assert tok.decode(ids[1:]) == f" <CON> {text} </CON>\n\n"  # the characters it holds, all of them
    # the same through the batched path and its truncation
    fitted = synth.fit_prompt(text, "row 0")
    assert fitted == ids
    plain = "A plain text with no markup at all."
    assert synth.encode_prompt(plain) == tok("<s> <CON> " + plain + " </CON>\n\n", add_special_tokens=False)["input_ids"]


def test_history_keeps_its_own_control_tokens_and_texts_stay_plain(tiny_model_dir):
    synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8)
    synth.load()
    tok = synth._loaded["tokenizer"]
    ids = synth.encode_prompt("second </s> text.", [("first <s> text.", [{"instruction": "Q?", "response": "A"}])])
    assert ids.count(tok.bos_token_id) == 2 and ids.count(tok.eos_token_id) == 1  # one per link, none from texts


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_undecodable_file_names_file_and_line_and_encoding_fixes_it(tmp_path, suffix):
    body = {".txt": "fine line\n\ncaf\xe9 line\n", ".jsonl": '{"text": "ok"}\n{"text": "caf\xe9"}\n',
            ".csv": "text\nok\ncaf\xe9\n"}[suffix]
    src = tmp_path / f"latin{suffix}"
    src.write_bytes(body.encode("latin-1"))
    line = 3 if suffix != ".jsonl" else 2
    with pytest.raises(InputError, match=rf"latin{suffix}, line {line}: not valid utf-8 \(byte 0xe9\).*--encoding"):
        open_input(str(src))
    texts = open_input(str(src), encoding="latin-1").dataset["text"]
    assert "café" in texts[-1] or "café" in texts


@pytest.mark.parametrize("make", ["empty_jsonl", "blank_txt", "header_csv", "zero_parquet", "zero_saved"])
def test_empty_input_is_one_line_and_exit_1(tmp_path, capsys, make):
    path = tmp_path / {"empty_jsonl": "e.jsonl", "blank_txt": "e.txt", "header_csv": "e.csv",
                       "zero_parquet": "e.parquet", "zero_saved": "saved"}[make]
    if make == "empty_jsonl":
        path.write_text("")
    elif make == "blank_txt":
        path.write_text("\n\n   \n\n")
    elif make == "header_csv":
        path.write_text("text,source\n")
    elif make == "zero_parquet":
        Dataset.from_dict({"text": []}).to_parquet(path)
    else:
        Dataset.from_dict({"text": []}).save_to_disk(path)
    assert _run_cli(tmp_path, str(path), "--output", str(tmp_path / "o")) == 1
    assert capsys.readouterr().err.strip() == f"error: {path} holds no rows"
    assert not (tmp_path / "o").exists()


def test_folder_splits_follow_datasets_inference(tmp_path):
    (tmp_path / "corpus" / "data").mkdir(parents=True)
    Dataset.from_dict({"text": ["train one.", "train two."]}).to_parquet(tmp_path / "corpus/data/train-00000.parquet")
    Dataset.from_dict({"text": ["test one."]}).to_parquet(tmp_path / "corpus/data/test-00000.parquet")
    assert open_input(str(tmp_path / "corpus")).dataset["text"] == ["train one.", "train two."]
    assert open_input(str(tmp_path / "corpus"), split="test").dataset["text"] == ["test one."]
    with pytest.raises(InputError, match=r"splits present: \['train', 'test'\]"):
        open_input(str(tmp_path / "corpus"), split="validation")


def test_txt_rows_by_paragraph_line_or_document_never_blank(tmp_path):
    (tmp_path / "t.txt").write_text("First para\nstill first.\n\n\n\nSecond para.\n   \nThird.\n")
    rows = lambda how: open_input(str(tmp_path / "t.txt"), sample_by=how).dataset["text"]  # noqa: E731
    assert [r.strip() for r in rows("paragraph")] == ["First para\nstill first.", "Second para.", "Third."]
    assert rows("line") == ["First para", "still first.", "Second para.", "Third."]
    assert len(rows("document")) == 1


def test_local_input_identity_is_its_content_not_its_time(tmp_path):
    import os

    (tmp_path / "a.jsonl").write_text('{"text": "one."}\n')
    first = open_input(str(tmp_path / "a.jsonl")).identity
    os.utime(tmp_path / "a.jsonl", (1, 1))
    assert open_input(str(tmp_path / "a.jsonl")).identity == first
    (tmp_path / "a.jsonl").write_text('{"text": "two."}\n')
    assert open_input(str(tmp_path / "a.jsonl")).identity != first


def _pq(rows: list[str]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": rows}), buf)
    return buf.getvalue()


def test_hub_subset_and_limit_fetch_only_what_is_needed(hub, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import Repo

    repo = Repo(False)
    repo.files["README.md"] = (b"---\nlicense: cc-by-4.0\nconfigs:\n- config_name: en\n  data_files:\n  - split: train\n"
                               b"    path: en/*.parquet\n- config_name: fr\n  data_files:\n  - split: train\n"
                               b"    path: fr/*.parquet\n---\n# multi\n")
    repo.files["en/part-0.parquet"] = _pq([f"english {i}." for i in range(10)])
    repo.files["fr/part-0.parquet"] = _pq([f"Le texte {i}. Il est court." for i in range(5)])
    name = f"user/multi-{repo.sha[:8]}"  # a repo of its own each run (mutmut runs tests twice in one process)
    hub.state.repos[name] = repo
    start = len(hub.state.log)
    src = open_input(name, subset="fr", limit=3)
    assert src.dataset["text"] == [f"Le texte {i}. Il est court." for i in range(3)]
    assert src.hub_commit == repo.sha and f"@{repo.sha}" in src.identity
    assert not any("/en/" in path for _, path in hub.state.log[start:])  # nothing of the other subset
    out = tmp_path / "o"
    assert main(["synthesize", name, "--subset", "fr", "--limit", "3", "--model", "demo", "--output", str(out),
                 "--max-new-tokens", "8", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["about"]["source"]["revision"] == repo.sha and manifest["about"]["source"]["subset"] == "fr"
    assert load_dataset(str(out), split="train")["text"] == src.dataset["text"]


def test_hub_unreachable_or_offline_fails_in_seconds_with_the_fix(monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(InputError, match="could not reach the Hub.*HF_HUB_OFFLINE=1"):
        open_input("user/anything")
    assert time.perf_counter() - start < 10
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(InputError, match="could not load the Hub dataset 'user/anything'"):
        open_input("user/anything")
    assert time.perf_counter() - start < 10


def test_unknown_encoding_and_empty_stream(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(InputError, match="unknown --encoding 'klingon'"):
        open_input(str(tmp_path / "a.jsonl"), encoding="klingon")
    (tmp_path / "b.txt").write_text("\n\n")
    with pytest.raises(EmptyInputError):
        open_input(str(tmp_path / "b.txt"), streaming=True)
