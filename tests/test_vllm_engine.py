"""The vLLM engine's wiring, against a stand-in ``vllm`` module (vLLM itself needs a GPU build).

The stand-in (``tests/fake_vllm/vllm.py``) follows vLLM's documented ``LLM.generate`` contract: token prompts
(``{"prompt_token_ids": [...]}``), ``SamplingParams`` with ``temperature=0`` meaning
greedy, generation stopped at a stop token with that token included in ``token_ids``,
results in request order carrying their ``prompt_token_ids``. It generates with the same
tiny model through transformers, so the engine's rows must equal the static engine's.
What this checks is ours: what we send to vLLM, how we read its answer back, and that a
mixed-up answer is refused rather than put in the wrong row.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from conftest import skewed_texts
from hf_instruct_synth import InstructionSynthesizer

NEW = 24

FAKE_VLLM = Path(__file__).parent / "fake_vllm"


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_VLLM))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    import vllm

    yield vllm
    sys.modules.pop("vllm", None)


def test_vllm_engine_matches_static_and_sends_token_prompts(fake_vllm, tiny_model_dir, tiny_tokenizer):
    texts = skewed_texts(12, seed=23)
    random.Random(4).shuffle(texts)
    static = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=NEW, engine="static")
    via_vllm = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=NEW, max_model_len=512,
                                      engine="vllm")
    assert via_vllm({"text": texts}) == static({"text": texts})
    assert via_vllm.stats.generated_tokens == static.stats.generated_tokens
    assert via_vllm.stats.prompt_tokens == static.stats.prompt_tokens and via_vllm.stats.pad_tokens == 0

    (_, model, tokenizer, kwargs), (_, prompts, sp) = fake_vllm.CALLS[:2]
    assert model == str(tiny_model_dir) and kwargs["max_model_len"] == 512
    assert len(prompts) == len(texts) and all(isinstance(t, int) for p in prompts for t in p["prompt_token_ids"])
    assert sp.max_tokens == NEW and sp.stop_token_ids == [tiny_tokenizer.eos_token_id] and not sp.detokenize


def test_vllm_answer_for_another_row_is_refused(fake_vllm, tiny_model_dir):
    fake_vllm.LLM.SCRAMBLE = True
    synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=4, engine="vllm")
    with pytest.raises(RuntimeError, match="belongs to another prompt"):
        synth({"text": ["a short text.", "a rather longer text about the river and the bridge."]})


def test_vllm_engine_needs_a_model_name_and_vllm(tiny_model, tiny_tokenizer, monkeypatch):
    synth = InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer, engine="vllm")
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'hf-instruct-synth\[vllm\]'"):
        synth({"text": ["x"]})


def test_vllm_engine_refuses_a_loaded_model(fake_vllm, tiny_model, tiny_tokenizer):
    synth = InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer, engine="vllm")
    with pytest.raises(ValueError, match="Hub id or local folder"):
        synth({"text": ["x"]})


def test_auto_is_vllm_when_it_imports_else_native(fake_vllm, tiny_model_dir, tiny_model, tiny_tokenizer, monkeypatch):
    assert InstructionSynthesizer(model=str(tiny_model_dir), engine="auto").resolved_engine() == "vllm"
    # a loaded model cannot go to vLLM (it loads weights itself): our native engine
    assert InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer).resolved_engine() == "native"
    monkeypatch.setattr("hf_instruct_synth.engines.vllm.vllm_available", lambda: False)
    synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=4)
    assert synth.resolved_engine() == "native" and synth._load()["engine"].name == "native"


def test_speculation_reaches_vllm_as_its_ngram_drafter(fake_vllm, tiny_model_dir):
    synth = InstructionSynthesizer(model=str(tiny_model_dir), engine="vllm", speculative="prompt_lookup",
                                   draft_tokens=5, ngram=4)
    synth.load()
    kwargs = [c for c in fake_vllm.CALLS if c[0] == "init"][-1][3]
    assert kwargs["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 5,
                                            "prompt_lookup_max": 4, "prompt_lookup_min": 1}
