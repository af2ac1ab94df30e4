"""Our own engine: continuous batching and prompt-lookup speculation, row by row equal to per-row generate."""

from __future__ import annotations

import pytest
import torch

from conftest import skewed_texts
from hf_instruct_synth import DEMO_MODEL, InstructionSynthesizer, build_prompt
from hf_instruct_synth.engines.native import NativeEngine, _Row
from hf_instruct_synth.stats import SynthesisStats

NEW = 24


def _reference(model, tok, prompts, new):
    out = []
    for p in prompts:
        ids = torch.tensor([p])
        with torch.inference_mode():
            g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        out.append([t for t in g[0, len(p):].tolist() if t not in (tok.eos_token_id, tok.pad_token_id)])
    return out


@pytest.fixture(scope="module")
def workload(tiny_model, tiny_tokenizer):
    prompts = [tiny_tokenizer(build_prompt(t), add_special_tokens=False)["input_ids"] for t in skewed_texts(30, seed=5)]
    return prompts, _reference(tiny_model, tiny_tokenizer, prompts, NEW)


@pytest.mark.parametrize("speculative", [None, "prompt_lookup"])
@pytest.mark.parametrize("budget", [100_000, 700, 300])
def test_every_row_equals_per_row_generate(tiny_model, tiny_tokenizer, workload, speculative, budget):
    prompts, reference = workload
    engine = NativeEngine(tiny_model, pad_token_id=tiny_tokenizer.pad_token_id, eos_token_ids=[tiny_tokenizer.eos_token_id],
                          max_new_tokens=NEW, max_batch_tokens=budget, speculative=speculative, ngram=3, min_ngram=1,
                          adaptive=False)  # every draft verified: the rollback path runs at every step
    stats = SynthesisStats()
    assert engine.generate(prompts, stats) == reference
    assert stats.generated_tokens == sum(min(NEW, len(r) + 1) for r in reference)
    if budget < 1000:
        assert stats.batches > 2  # prompts joined the running batch in several prefill groups
    if speculative:
        assert stats.draft_tokens_proposed > 0


def test_rows_finished_early_leave_and_later_prompts_join(tiny_model, tiny_tokenizer, workload, monkeypatch):
    prompts, reference = workload
    engine = NativeEngine(tiny_model, pad_token_id=tiny_tokenizer.pad_token_id, eos_token_ids=[tiny_tokenizer.eos_token_id],
                          max_new_tokens=NEW, max_batch_tokens=900)
    widths = []
    real = engine._step

    def spy(rows, cache, mask, last):
        widths.append(len(rows))
        return real(rows, cache, mask, last)

    monkeypatch.setattr(engine, "_step", spy)
    assert engine.generate(prompts, SynthesisStats()) == reference
    assert max(widths) < len(prompts) and len(set(widths)) > 3  # the batch shrank as rows left and grew as they joined


def test_speculation_on_a_copying_model_accepts_drafts_and_keeps_outputs():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(DEMO_MODEL)
    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL).eval()
    texts = ["The old bridge over the river was built in 1820 by the town's masons, who used stone from the hills.",
             "In the library, a scholar wrote a letter to the queen about the ships that left the harbour in winter."]
    prompts = [tok(build_prompt(t), add_special_tokens=False)["input_ids"] for t in texts]
    plain = NativeEngine(model, pad_token_id=tok.pad_token_id, eos_token_ids=[tok.eos_token_id], max_new_tokens=96,
                         max_batch_tokens=8192)
    reference = plain.generate(prompts, SynthesisStats())
    adaptive, forced = (NativeEngine(model, pad_token_id=tok.pad_token_id, eos_token_ids=[tok.eos_token_id],
                                     max_new_tokens=96, max_batch_tokens=8192, speculative="prompt_lookup",
                                     adaptive=a) for a in (True, False))
    assert adaptive.generate(prompts, SynthesisStats()) == reference
    # drafting at full width every step (the adaptive engine drafts as its timings say, so how
    # many of its few drafts land is noise): the demo copies, so most drafts land
    stats = SynthesisStats()
    assert forced.generate(prompts, stats) == reference
    assert stats.draft_tokens_accepted > 0.4 * stats.draft_tokens_proposed > 0


def test_an_oom_sends_rows_back_and_loses_none(tiny_model, tiny_tokenizer, workload, monkeypatch):
    prompts, reference = workload
    engine = NativeEngine(tiny_model, pad_token_id=tiny_tokenizer.pad_token_id, eos_token_ids=[tiny_tokenizer.eos_token_id],
                          max_new_tokens=NEW, max_batch_tokens=100_000)
    real = engine._forward

    def forward_or_oom(cache, **inputs):
        if inputs["input_ids"].shape[0] > 6:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return real(cache, **inputs)

    monkeypatch.setattr(engine, "_forward", forward_or_oom)
    stats = SynthesisStats()
    assert engine.generate(prompts, stats) == reference
    assert stats.oom_splits >= 1 and engine.max_batch_tokens < 100_000


def test_drafts_come_from_the_rows_own_text():
    row = _Row(0, [1, 5, 6, 7, 8, 9, 5, 6], ngram=3, min_ngram=2)
    assert row.draft(3) == ([7, 8, 9], 2)  # "5 6" was followed by "7 8 9"
    row.push(4)
    assert row.draft(3) == ([], 0)  # "6 4" never occurred before
    assert row.draft(2, min_ngram=1) == ([], 0)  # nor "4"
    row.push(7)
    assert row.draft(2, min_ngram=1) == ([8, 9], 1)  # "7" was followed by "8 9"
    assert _Row(0, [1, 2, 3], ngram=3, min_ngram=2).draft(2) == ([], 0)


def test_adaptive_drafting_stays_off_where_it_cannot_pay(tiny_model, tiny_tokenizer, workload):
    prompts, reference = workload
    engine = NativeEngine(tiny_model, pad_token_id=tiny_tokenizer.pad_token_id, eos_token_ids=[tiny_tokenizer.eos_token_id],
                          max_new_tokens=NEW, max_batch_tokens=100_000, speculative="prompt_lookup")
    engine._pass_cost = lambda: (0.0, 1.0)  # a pass costs in proportion to its tokens: drafts only cost
    stats = SynthesisStats()
    assert engine.generate(prompts, stats) == reference and stats.draft_tokens_proposed == 0
    engine._pass_cost = lambda: (1.0, 0.0)  # a pass costs the same whatever its width: drafts are free
    stats = SynthesisStats()
    assert engine.generate(prompts, stats) == reference and stats.draft_tokens_proposed > 0


def test_synthesizer_and_cli_options(tiny_model_dir):
    synth = InstructionSynthesizer(model=str(tiny_model_dir), engine="native", speculative="prompt_lookup",
                                   max_new_tokens=8)
    engine = synth._load()["engine"]
    assert engine.name == "native" and engine.speculative == "prompt_lookup"
    assert "prompt_lookup" in synth.settings()["speculative"]
    with pytest.raises(ValueError, match="needs engine='native' or 'vllm'"):
        InstructionSynthesizer(model=str(tiny_model_dir), engine="static", speculative="prompt_lookup")
    assert synth.fingerprint() != InstructionSynthesizer(model=str(tiny_model_dir), engine="native",
                                                          max_new_tokens=8).fingerprint()
