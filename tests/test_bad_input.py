"""Bad input: clear errors naming the row, or counted skips; never a lost row."""

from __future__ import annotations

import pytest
from datasets import Dataset

from conftest import per_row_generate
from hf_instruct_synth import InstructionSynthesizer
from hf_instruct_synth.format import PROMPT_TAIL


@pytest.fixture
def synth_factory(tiny_model, tiny_tokenizer):
    def make(**kw):
        kw.setdefault("max_new_tokens", 8)
        kw.setdefault("tokenizer", tiny_tokenizer)
        return InstructionSynthesizer(model=tiny_model, **kw)

    return make


def test_long_prompt_truncated_at_text_end_keeping_the_tail(synth_factory, tiny_tokenizer, tiny_model):
    long_text = " ".join(f"word{i}" for i in range(400))
    synth = synth_factory(max_model_len=72, max_new_tokens=8)
    synth._load()
    ids = synth.fit_prompt(long_text, "row 0")
    assert len(ids) <= 64
    assert len(ids) == 64  # cut at the exact token: the longest prefix that fits (offsets, one re-encode)
    decoded = tiny_tokenizer.decode(ids)
    assert decoded.startswith("<s> <CON> word0 word1") and decoded.endswith(PROMPT_TAIL)
    kept_text = decoded[len("<s> <CON> "):-len(PROMPT_TAIL)]
    assert long_text.startswith(kept_text)
    assert synth.stats.rows_truncated == 1
    out = synth({"text": [long_text, "short text."]})
    assert synth.stats.rows_truncated == 2  # once more inside the call; the short row is untouched
    assert out["synthesizer_output"][0] == per_row_generate(tiny_model, tiny_tokenizer, ids, 8)


def test_overflow_error_names_the_row(synth_factory):
    synth = synth_factory(max_model_len=40, max_new_tokens=8, on_overflow="error")
    with pytest.raises(ValueError, match=r"row 1 of the batch.*tokens.*max_model_len"):
        synth({"text": ["ok", "x " * 200]})


def test_empty_and_whitespace_texts_run_no_model(tiny_model_dir):
    synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8)
    out = synth({"text": ["", "   \n\t "]})
    assert out == {"instruction_response_pairs": [[], []], "synthesizer_output": ["", ""]}
    assert not synth.is_loaded
    assert synth.stats.rows_empty == 2 and synth.stats.rows_without_pairs == 2


def test_none_or_non_string_raises_naming_column_and_dataset_row(synth_factory):
    ds = Dataset.from_dict({"body": ["fine text.", "also fine.", None, "more."]})
    synth = synth_factory(text_column="body")
    with pytest.raises(ValueError, match=r"row 2: column 'body' holds NoneType"):
        ds.map(synth, batched=True, with_indices=True)
    with pytest.raises(ValueError, match=r"row 0 of the batch.*column 'text' holds int"):
        synth_factory()({"text": [5]})


def test_invalid_rows_skipped_when_asked_and_counted(synth_factory):
    ds = Dataset.from_dict({"text": ["fine text.", None, "", "more text."]})
    synth = synth_factory(on_invalid="skip")
    out = ds.map(synth, batched=True)
    assert len(out) == 4
    assert out["synthesizer_output"][1] == "" and out["instruction_response_pairs"][1] == []
    assert out["synthesizer_output"][0] != ""
    assert synth.stats.rows_skipped == 1 and synth.stats.rows_empty == 1 and synth.stats.rows == 4


def test_missing_column_lists_the_columns(synth_factory):
    ds = Dataset.from_dict({"content": ["a"], "id": [1]})
    with pytest.raises(ValueError, match=r"no column 'text'; columns present: \['content', 'id'\]"):
        ds.map(synth_factory(), batched=True)


def test_a_batch_without_any_pair_keeps_the_column_type(synth_factory):
    # a whole batch of empty texts, then normal rows: the pairs column must stay list<struct>
    ds = Dataset.from_dict({"text": ["", " ", "the king wrote.", "a river."]})
    out = ds.map(synth_factory(), batched=True, batch_size=2)
    assert str(out.features["instruction_response_pairs"]) == \
        "List({'instruction': Value('string'), 'response': Value('string')})"


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="must exceed max_new_tokens"):
        InstructionSynthesizer(max_new_tokens=400, max_model_len=400)
    with pytest.raises(ValueError, match="on_invalid"):
        InstructionSynthesizer(on_invalid="ignore")


def test_unreachable_model_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    synth = InstructionSynthesizer(model="no-such-org/no-such-model", max_new_tokens=4)
    with pytest.raises(OSError, match=r"could not load the model 'no-such-org/no-such-model'.*--model demo"):
        synth({"text": ["hello"]})


class _SlowTokenizer:
    """A tokenizer without offsets (``is_fast`` False, as sentencepiece-only tokenizers are)."""

    is_fast = False

    def __init__(self, fast):
        self._fast = fast

    def __call__(self, texts, **kw):
        assert not kw.get("return_offsets_mapping"), "a slow tokenizer has no offsets"
        return self._fast(texts, **kw)

    def __getattr__(self, name):
        return getattr(self._fast, name)


def test_a_tokenizer_without_offsets_gives_the_same_prompts_and_truncates_within_budget(synth_factory,
                                                                                        tiny_tokenizer):
    """Tokenizers with no offsets take the proportional cut: same prompts when they fit, and a
    truncated prompt that fits, ends with the closing tail and keeps a prefix of the text."""
    long_text = " ".join(f"word{i}" for i in range(400))
    texts = ["short text.", "Another one, with <s> and </s> inside.", long_text]
    fast, slow = synth_factory(max_model_len=72), synth_factory(max_model_len=72, tokenizer=_SlowTokenizer(tiny_tokenizer))
    fast._load(), slow._load()
    assert slow._encode_many([f"<s>{t}" for t in texts[:2]]) == [(ids, None) for ids, _ in
                                                                 fast._encode_many([f"<s>{t}" for t in texts[:2]])]
    for text in texts[:2]:
        assert slow.fit_prompt(text, "row") == fast.fit_prompt(text, "row")
    ids = slow.fit_prompt(long_text, "row 2")
    assert 56 <= len(ids) <= 64  # the proportional cut fits the budget and wastes little of it
    decoded = tiny_tokenizer.decode(ids)
    assert decoded.startswith("<s> <CON> word0 word1") and decoded.endswith(PROMPT_TAIL)
    assert long_text.startswith(decoded[len("<s> <CON> "):-len(PROMPT_TAIL)])
    assert slow.stats.rows_truncated == 1 and ids.count(tiny_tokenizer.bos_token_id) == 1
    out, ref = slow({"text": texts}), fast({"text": texts[:2]})
    assert out["synthesizer_output"][:2] == ref["synthesizer_output"]  # the batched path too
    assert out["synthesizer_output"][2] == per_row_generate(slow._loaded["model"], tiny_tokenizer, ids, 8)
