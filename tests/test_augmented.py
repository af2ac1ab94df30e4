"""The augmented corpus by default: every run writes templified pre-training texts; fidelity rules pinned."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset

from hf_instruct_synth import InstructionSynthesizer
from hf_instruct_synth.rounds import fits_history, synthesize_rounds
from hf_instruct_synth.run import run_to_dir
from hf_instruct_synth.templify import Templify, augment_rows, classify, templify_with_modes
from hf_instruct_synth.testing import ScriptedEngine, scripted_pairs

HERE = Path(__file__).parent
GOLDEN = HERE / "golden" / "templify.json"
TEXTS = [f"Bridge {i} spans the river. It was built in year {1800 + i}. NOPAIRS" if i == 3 else
         f"Bridge {i} spans the river. It was built in year {1800 + i}." for i in range(8)]


def _synth():
    return InstructionSynthesizer(model="unused/name", engine=ScriptedEngine(), max_new_tokens=64)


def _run(out, **kw):
    kw.setdefault("shard_rows", 3)
    run_to_dir(Dataset.from_dict({"text": TEXTS}), _synth(), out, progress=False, source="t", log=lambda _: None, **kw)
    return load_dataset(str(out), split="train")


def test_a_default_run_writes_augmented_texts_for_every_row(tmp_path):
    rows = _run(tmp_path / "a")
    again = _run(tmp_path / "b")
    assert rows["augmented_texts"] == again["augmented_texts"]  # same seed, same texts
    for row in rows:
        assert len(row["augmented_texts"]) == 1 and row["text"] in row["augmented_texts"][0]
        for pair in row["instruction_response_pairs"]:
            assert pair["response"] in row["augmented_texts"][0] and pair["instruction"] in row["augmented_texts"][0]
    nopairs = rows[3]
    assert nopairs["instruction_response_pairs"] == [] and nopairs["augmented_texts"] == [nopairs["text"]]
    assert nopairs["template_modes"] == ["raw"]
    other = _run(tmp_path / "c", seed=1)
    assert other["augmented_texts"] != rows["augmented_texts"]


def test_no_templify_writes_pairs_only(tmp_path):
    rows = _run(tmp_path / "a", templify=False)
    assert "augmented_texts" not in rows.column_names
    assert rows["instruction_response_pairs"] == [scripted_pairs(t) for t in TEXTS]


def test_templify_transform_on_a_dataset_with_pairs():
    ds = Dataset.from_dict({"text": TEXTS}).map(_synth(), batched=True)
    out = ds.map(Templify(seed=0), batched=True, batch_size=3)
    direct, _ = augment_rows(TEXTS, ds["instruction_response_pairs"], 0)
    assert out["augmented_texts"] == direct  # batch size and position do not matter


def test_templified_texts_are_byte_identical_in_another_process():
    pairs = [scripted_pairs(t) for t in TEXTS]
    here, _ = augment_rows(TEXTS, pairs, 11)
    code = ("import json,sys; from hf_instruct_synth.templify import augment_rows; d=json.load(sys.stdin);"
            "print(json.dumps(augment_rows(d['t'], d['p'], 11)[0]))")
    other = subprocess.run([sys.executable, "-c", code], input=json.dumps({"t": TEXTS, "p": pairs}),
                           capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert json.loads(other.stdout) == here
    assert json.loads(GOLDEN.read_text()) == here, "templify output changed: bump RULES_VERSION and the golden file"


def test_history_budget_words_follows_the_reference_estimate():
    assert fits_history([0] * 15, "w " * 10, 20, "words") is True  # 11 words x 1.5 <= 20
    assert fits_history([0] * 100, "w " * 10, 20, "words") is False  # admitted by the estimate, but cannot run
    assert fits_history([0] * 10, "w " * 20, 20, "words") is False  # 21 x 1.5 > 20
    assert fits_history([0] * 10, "w " * 20, 20, "tokens") is True


def test_rounds_with_words_budget_chain_as_the_reference_would(tiny_tokenizer):
    texts = ["first text here.", "second text here."]
    synth = InstructionSynthesizer(model="unused/name", engine=ScriptedEngine(tokenizer=tiny_tokenizer),
                                   max_new_tokens=16, max_model_len=400)
    with_words = synthesize_rounds(Dataset.from_dict({"text": texts}), synth, rounds=2, history_budget="words")
    assert with_words["links"][0][1]["inherits"] is True
    history = "".join(f"<s> <CON> {texts[0]} </CON>\n\n" for _ in [0])
    words = len((history + "<QUE> What follows \"first text\"? <ANS> here. </END></s>"
                 + f"<s> <CON> {texts[1]} </CON>\n\n").split(" "))
    tight = InstructionSynthesizer(model="unused/name", engine=ScriptedEngine(tokenizer=tiny_tokenizer),
                                   max_new_tokens=16, max_model_len=16 + int(words * 1.5) - 1)
    out = synthesize_rounds(Dataset.from_dict({"text": texts}), tight, rounds=2, history_budget="words")
    assert out["links"][0][1]["inherits"] is False  # the estimate says no, whatever the real count
    with pytest.raises(ValueError, match="history_budget"):
        synthesize_rounds(Dataset.from_dict({"text": texts}), synth, rounds=2, history_budget="chars")


# ---------------------------------------------------------------- fidelity rules (README's table)
def test_rule_multiple_choice_answer_matches_loosely():
    mc = {"instruction": "Which river?\nOptions:\n- the Thames\n- the Nile", "response": "The Nile."}
    assert classify(mc)["kind"] == "mc" and classify(mc)["correct"] == 1


def test_rule_unanswerable_gets_a_none_of_the_above_option():
    mc = {"instruction": "Which year?\nOptions:\n- 1801\n- 1802", "response": "unanswerable"}
    part = classify(mc)
    assert part["correct"] is None
    text = templify_with_modes([{"text": "T.", "inherits": False, "instruction_response_pairs": [mc]}], 0)[0]["text"]
    assert "1801" in text and "1802" in text and "unanswerable" not in text.lower().split("which year?")[0]


def test_rule_options_are_always_listed():
    mc = {"instruction": "Which river?\nOptions:\n- the Thames\n- the Nile", "response": "the Nile"}
    for seed in range(50):
        text = templify_with_modes([{"text": "T.", "inherits": False, "instruction_response_pairs": [mc]}],
                                   seed)[0]["text"]
        assert "the Thames" in text


def test_rule_cot_marker_needs_its_own_line():
    cot = {"instruction": "How many?\nLet's think step by step.", "response": "3 and 4.\nTherefore, the answer is 7"}
    inline = {"instruction": "How many? Let's think step by step.", "response": "3 and 4.\nTherefore, the answer is 7"}
    assert classify(cot)["kind"] == "cot" and classify(inline)["kind"] == "plain"


def test_rows_after_an_invalid_text_still_get_their_texts():
    texts, modes = augment_rows(["First text.", None, "", "Last text."], [[], [], [], []], 0)
    assert texts == [["First text."], [], [], ["Last text."]] and modes == [["raw"], [], [], ["raw"]]


def test_links_after_a_raw_link_are_kept():
    pair = {"instruction": "Who?", "response": "Ada"}
    chain = [{"text": "No pairs here.", "inherits": False, "instruction_response_pairs": []},
             {"text": "Ada wrote.", "inherits": False, "instruction_response_pairs": [pair]}]
    out = templify_with_modes(chain, 0)
    assert [o["mode"] for o in out][0] == "raw" and len(out) == 2 and "Ada wrote." in out[1]["text"]


def test_cot_and_options_parsing_details():
    cot = {"instruction": "Sum?\nLet's think step by step.",
           "response": "Therefore, the answer is not yet clear. 3 plus 4.\nTherefore, the answer is 7."}
    part = classify(cot)
    assert part["answer"] == "7" and part["stem"] == "Sum?"  # the last conclusion; the marker cut from the stem
    assert part["reasoning"].startswith("Therefore, the answer is not yet clear")
    mc = {"instruction": "Pick one.\nOptions:\n- red.\n- blue\nnot an option line", "response": "Red"}
    part = classify(mc)
    assert part["options"] == ["red.", "blue"] and part["correct"] == 0  # only "- " lines; dots and case ignored
    assert classify({"instruction": "\nOptions:\n- a\n- b", "response": "a"}) is None  # options without a stem
    assert classify({"instruction": "Stem?\nOptions:\n- only one", "response": "only one"}) is None
    two = {"instruction": "Q?\nOptions:\n- a\n- b\nOptions:\n- c", "response": "a"}
    assert classify(two)["options"] == ["a", "b", "c"]  # cut at the first block; its "- " lines are the options
