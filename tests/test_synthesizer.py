"""InstructionSynthesizer end to end on a tiny local Mistral: outputs, order, padding, placement."""

from __future__ import annotations

import os
import pickle
import random

import pytest
import torch
from datasets import Dataset

from conftest import per_row_generate, skewed_texts
from hf_instruct_synth import InstructionSynthesizer, build_prompt
from hf_instruct_synth.engines.static import StaticEngine
from hf_instruct_synth.loading import resolve_placement
from hf_instruct_synth.stats import SynthesisStats

NEW = 24


def test_map_adds_both_columns_equal_to_per_row_generation(tiny_model_dir, tiny_model, tiny_tokenizer):
    texts = skewed_texts(48, seed=3)
    ds = Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})
    synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=NEW, max_batch_tokens=1500)
    out = ds.map(synth, batched=True, batch_size=16)
    assert out.column_names == ["text", "id", "instruction_response_pairs", "synthesizer_output"]
    assert out["id"] == list(range(len(texts))) and out["text"] == texts
    for text, got in zip(texts, out["synthesizer_output"]):
        ids = tiny_tokenizer(build_prompt(text), add_special_tokens=False)["input_ids"]
        assert got == per_row_generate(tiny_model, tiny_tokenizer, ids, NEW)
    s = synth.stats
    assert s.rows == s.rows_generated == 48 and s.batches > 3  # the budget cut several sub-batches
    assert 0 < s.generated_tokens <= 48 * NEW
    # some rows stopped early at EOS, so the EOS path was exercised
    assert s.generated_tokens < 48 * NEW


def test_order_kept_with_shuffled_lengths(tiny_model, tiny_tokenizer):
    texts = skewed_texts(30, seed=5)
    random.Random(1).shuffle(texts)
    synth = InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer, max_new_tokens=NEW,
                                   max_batch_tokens=900)
    batched = synth({"text": texts})["synthesizer_output"]
    single = [synth({"text": [t]})["synthesizer_output"][0] for t in texts]
    assert batched == single
    assert len(set(batched)) > 5  # rows differ, so a permutation would be caught


def test_sorting_reduces_padding(tiny_model, tiny_tokenizer):
    texts = skewed_texts(64, seed=7)
    prompts = [tiny_tokenizer(build_prompt(t), add_special_tokens=False)["input_ids"] for t in texts]
    eos = [tiny_tokenizer.eos_token_id]
    results = {}
    for sort in (True, False):
        stats = SynthesisStats()
        engine = StaticEngine(tiny_model, pad_token_id=tiny_tokenizer.pad_token_id, eos_token_ids=eos,
                              max_new_tokens=8, max_batch_tokens=600, sort=sort)
        results[sort] = (engine.generate(prompts, stats), stats)
    assert results[True][0] == results[False][0]  # same outputs, same order
    sorted_stats, unsorted_stats = results[True][1], results[False][1]
    assert sorted_stats.prompt_tokens == unsorted_stats.prompt_tokens
    assert sorted_stats.pad_fraction < 0.5 * unsorted_stats.pad_fraction
    print(f"pad fraction sorted={sorted_stats.pad_fraction:.3f} unsorted={unsorted_stats.pad_fraction:.3f}")


def test_oom_splits_the_sub_batch_and_loses_no_row(tiny_model, tiny_tokenizer, monkeypatch):
    texts = skewed_texts(20, seed=9)
    synth = InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer, max_new_tokens=NEW,
                                   max_batch_tokens=100_000, engine="static")
    expected = synth({"text": texts})["synthesizer_output"]
    real_generate = tiny_model.generate

    def generate_or_oom(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "generate", generate_or_oom)
    retry = InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer, max_new_tokens=NEW,
                                   max_batch_tokens=100_000, engine="static")
    assert retry({"text": texts})["synthesizer_output"] == expected
    assert retry.stats.oom_splits >= 1 and retry.stats.rows == 20


def test_other_errors_are_not_swallowed(tiny_model, tiny_tokenizer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(tiny_model, "generate", broken)
    synth = InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer, max_new_tokens=4, engine="static")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        synth({"text": ["a b c"]})
    assert synth.stats.oom_splits == 0


def test_loads_lazily_and_pickles_small(tiny_model_dir):
    synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=4)
    assert not synth.is_loaded
    synth({"text": ["the king wrote a letter."]})
    assert synth.is_loaded
    blob = pickle.dumps(synth)
    assert len(blob) < 5_000
    clone = pickle.loads(blob)
    assert not clone.is_loaded and clone.fingerprint() == synth.fingerprint()
    assert clone({"text": ["the king wrote a letter."]}) == synth({"text": ["the king wrote a letter."]})


RANK_SCRIPT = """
import sys, multiprocess
from datasets import Dataset
from hf_instruct_synth import InstructionSynthesizer
sys.path.insert(0, sys.argv[2])
from conftest import skewed_texts
if __name__ == "__main__":
    # as on GPUs (CUDA cannot fork), workers are spawned; the parent has used torch already
    multiprocess.set_start_method("spawn", force=True)
    ds = Dataset.from_dict({"text": skewed_texts(12, seed=11)})
    single = ds.map(InstructionSynthesizer(model=sys.argv[1], max_new_tokens=8), batched=True)
    synth = InstructionSynthesizer(model=sys.argv[1], max_new_tokens=8)
    out = ds.map(synth, batched=True, batch_size=4, with_rank=True, num_proc=2)
    assert out["synthesizer_output"] == single["synthesizer_output"], "rank run differs"
    assert not synth.is_loaded  # the model was loaded in the workers, not here
    print("RANK-OK", len(out))
"""


def test_with_rank_and_two_processes(tiny_model_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "rank_run.py"
    script.write_text(RANK_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANK-OK 12" in proc.stdout


def test_placement_picks_gpu_by_rank_bf16_and_flash(monkeypatch):
    from hf_instruct_synth import loading

    assert resolve_placement(None, None, None, rank=3) == ("cpu", "float32", "sdpa") or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(loading, "flash_attention_usable", lambda device, dtype: False)
    assert resolve_placement(None, None, None, rank=3) == ("cuda:1", "bfloat16", "sdpa")
    monkeypatch.setattr(loading, "flash_attention_usable", lambda device, dtype: dtype == "bfloat16")
    assert resolve_placement(None, None, None, rank=0) == ("cuda:0", "bfloat16", "flash_attention_2")
    assert resolve_placement("cpu", "float16", "eager", rank=1) == ("cpu", "float16", "eager")


def test_stats_merge_and_dict():
    a = SynthesisStats(rows=2, pairs=3, pairs_per_row={"1": 1, "2": 1})
    b = SynthesisStats(rows=1, pairs=0, pairs_per_row={"0": 1})
    a.merge(b)
    assert a.rows == 3 and a.pairs_per_row == {"1": 1, "2": 1, "0": 1}
    assert SynthesisStats.from_dict(a.to_dict()) == a


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("engine, speculative", [("static", None), ("native", None), ("native", "prompt_lookup")])
def test_gpu_bf16_batched_equals_per_row(tiny_model_dir, engine, speculative):
    texts = skewed_texts(32, seed=13)
    synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=NEW, engine=engine,
                                   speculative=speculative)
    out = synth({"text": texts})["synthesizer_output"]
    loaded = synth._load()
    model, tok = loaded["model"], loaded["tokenizer"]
    assert model.dtype == torch.bfloat16 and model.device.type == "cuda"
    same = sum(o == per_row_generate(model, tok, synth.encode_prompt(t), NEW) for o, t in zip(out, texts))
    assert same >= 0.9 * len(texts), f"{same}/{len(texts)} rows equal per-row generate in bf16"


def test_any_causal_lm_gpt2_without_pad_token(tmp_path):
    """Absolute positions (GPT-2) and a tokenizer with no pad token: still equal to per-row output."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_instruct_synth.demo.tiny import make_tokenizer

    tok = make_tokenizer(skewed_texts(100, seed=4), vocab_size=300)
    tok.pad_token = None
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=64, n_layer=2, n_head=4,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                       initializer_range=0.2)).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    texts = skewed_texts(16, seed=8)
    out = Dataset.from_dict({"text": texts}).map(InstructionSynthesizer(model=str(tmp_path), max_new_tokens=12),
                                                 batched=True)
    for text, got in zip(texts, out["synthesizer_output"]):
        ids = tok(build_prompt(text), add_special_tokens=False)["input_ids"]
        cfg_ids = torch.tensor([ids])
        ref = model.generate(input_ids=cfg_ids, attention_mask=torch.ones_like(cfg_ids), max_new_tokens=12,
                             do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        assert got == tok.decode(ref[0, len(ids):], skip_special_tokens=True)


def test_map_on_an_iterable_dataset_streams_the_same_rows(tiny_model_dir):
    texts = skewed_texts(20, seed=21)
    ds = Dataset.from_dict({"text": texts, "n": list(range(20))})
    synth = InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8)
    streamed = list(ds.to_iterable_dataset(num_shards=2).map(synth, batched=True, batch_size=6))
    eager = ds.map(InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8), batched=True)
    assert [r["n"] for r in streamed] == list(range(20))
    assert [r["synthesizer_output"] for r in streamed] == eager["synthesizer_output"]
    assert [r["instruction_response_pairs"] for r in streamed] == eager["instruction_response_pairs"]


def test_continuous_engine_matches_static_and_keeps_order(tiny_model, tiny_tokenizer):
    texts = skewed_texts(16, seed=17)
    random.Random(2).shuffle(texts)
    static = InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer, max_new_tokens=NEW, engine="static")
    cont = InstructionSynthesizer(model=tiny_model, tokenizer=tiny_tokenizer, max_new_tokens=NEW, engine="continuous")
    assert cont({"text": texts}) == static({"text": texts})
    assert cont.stats.generated_tokens == static.stats.generated_tokens and cont.stats.pad_tokens == 0
    with pytest.raises(ValueError, match="engine must be one of"):
        InstructionSynthesizer(engine="warp")


def test_an_oom_lowers_the_budget_for_every_later_sub_batch(tiny_model, tiny_tokenizer, monkeypatch):
    from hf_instruct_synth.engines.static import StaticEngine
    from hf_instruct_synth.stats import SynthesisStats

    real_generate = tiny_model.generate
    sizes = []

    def generate_or_oom(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if kwargs["input_ids"].shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "generate", generate_or_oom)
    engine = StaticEngine(tiny_model, pad_token_id=tiny_tokenizer.pad_token_id, eos_token_ids=[tiny_tokenizer.eos_token_id],
                          max_new_tokens=4, max_batch_tokens=100_000)
    prompts = [tiny_tokenizer(t)["input_ids"] for t in skewed_texts(16, seed=3, mean_words=1.5, sigma=0.2)]
    first = SynthesisStats()
    out = engine.generate(prompts, first)
    assert first.oom_splits >= 2 and engine.max_batch_tokens < 100_000 and all(o is not None for o in out)
    second = SynthesisStats()
    sizes.clear()
    assert engine.generate(prompts, second) == out
    assert second.oom_splits == 0 and max(sizes) <= 3  # later sub-batches are cut under the lowered budget


def test_flash_attention_that_fails_to_load_falls_back_to_sdpa(tiny_model_dir, capsys):
    from hf_instruct_synth import loading

    loading._WARNED.clear()
    model, _ = loading.load_model_and_tokenizer(str(tiny_model_dir), None, revision=None, device="cpu",
                                                dtype="float32", attn_implementation="flash_attention_2")
    assert model.config._attn_implementation == "sdpa"
    assert "flash_attention_2 could not be used" in capsys.readouterr().err
    loading.load_model_and_tokenizer(str(tiny_model_dir), None, revision=None, device="cpu", dtype="float32",
                                     attn_implementation="flash_attention_2")
    assert "could not be used" not in capsys.readouterr().err  # said once


def test_flash_attention_needs_half_precision_and_ampere(monkeypatch):
    import transformers.utils

    from hf_instruct_synth import loading

    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert loading.flash_attention_usable("cuda:0", "bfloat16") is True
    assert loading.flash_attention_usable("cuda:0", "float32") is False
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert loading.flash_attention_usable("cuda:0", "float16") is False
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert loading.flash_attention_usable("cuda:0", "bfloat16") is False
    # a forced float32 on a GPU never picks flash-attention
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert loading.resolve_placement(None, "float32", None, 3) == ("cuda:1", "float32", "sdpa")
    assert loading.resolve_placement(None, None, None, 0) == ("cuda:0", "bfloat16", "flash_attention_2")
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_a_worker_is_pinned_to_its_own_gpu_before_cuda_starts(monkeypatch):
    from hf_instruct_synth import loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert loading.pin_worker_to_gpu(1) == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert loading.pin_worker_to_gpu(2) == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert loading.pin_worker_to_gpu(None) is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert loading.pin_worker_to_gpu(1) is None  # too late: CUDA already runs in this process


def test_cpu_threads_follow_the_idle_cores(monkeypatch):
    import psutil

    from hf_instruct_synth import loading

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("HF_INSTRUCT_SYNTH_CPU_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: [100.0, 3.0, 97.0, 10.0])
    assert loading.cpu_threads() == 2  # two cores are taken by another process
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: [100.0] * 4)
    assert loading.cpu_threads() == 1
    monkeypatch.setenv("HF_INSTRUCT_SYNTH_CPU_THREADS", "3")
    assert loading.cpu_threads() == 3


def test_a_tokenizer_that_adds_bos_itself_still_gives_one_bos_per_prompt(tiny_tokenizer):
    """Mistral's tokenizer adds ``<s>`` to whatever it encodes (a template post-processor); the
    prompt is built with exactly one ``<s>`` per link all the same, as the reference prompts are."""
    import copy

    from tokenizers.processors import TemplateProcessing

    from hf_instruct_synth.testing import ScriptedEngine

    tok = copy.deepcopy(tiny_tokenizer)
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    assert tok("x")["input_ids"][0] == bos  # it does add <s> by default
    synth = InstructionSynthesizer(model="unused", engine=ScriptedEngine(tokenizer=tok))
    ids = synth.encode_prompt("A text.", history=[("Before.", [{"instruction": "Q?", "response": "A"}])])
    assert ids.count(bos) == 2 and ids[0] == bos
    assert ids == tiny_tokenizer("<s> <CON> Before. </CON>\n\n<QUE> Q? <ANS> A </END></s><s> <CON> A text. </CON>\n\n",
                                 add_special_tokens=False)["input_ids"]

    class Recording(ScriptedEngine):
        def generate(self, prompts, stats):
            self.prompts = prompts
            return super().generate(prompts, stats)

    engine = Recording(tokenizer=tok)
    batched = InstructionSynthesizer(model="unused", engine=engine)
    batched({"text": ["One text here.", "Another, longer text here."]})  # the batched path encodes on its own
    assert sorted(engine.prompts) == sorted([batched.encode_prompt("One text here."),
                                             batched.encode_prompt("Another, longer text here.")])
    assert all(p.count(bos) == 1 for p in engine.prompts)


def test_the_pairs_column_has_its_type_even_when_no_row_has_a_pair():
    """A shard whose rows all lack pairs is written with the same column type as any other."""
    import pyarrow as pa

    from hf_instruct_synth.synthesizer import PairsColumn

    pair = pa.struct([("instruction", pa.string()), ("response", pa.string())])
    assert pa.array(PairsColumn([[], []])).type == pa.list_(pair)
    assert pa.array(PairsColumn([[{"instruction": "Q", "response": "A"}]])).type == pa.list_(pair)


def test_defaults_are_the_contracts_and_every_bound_is_checked_at_its_edge():
    """DESIGN.md's defaults (the published synthesizer, 400 new tokens in 4096), and each argument
    check refusing exactly the values it names, with the value in the message."""
    from hf_instruct_synth.synthesizer import DEFAULT_MODEL

    s = InstructionSynthesizer()
    assert DEFAULT_MODEL == "instruction-pretrain/instruction-synthesizer" and s.model == DEFAULT_MODEL
    assert (s.tokenizer, s.text_column, s.max_new_tokens, s.max_model_len, s.max_batch_tokens, s.max_pad_fraction,
            s.revision, s.device, s.dtype, s.attn_implementation, s.dedupe, s.on_overflow, s.on_invalid, s.engine,
            s.speculative, s.draft_tokens, s.ngram) == (
        None, "text", 400, 4096, None, 0.1, None, None, None, None, True, "truncate", "error", "auto", None, 4, 3)
    assert not s.is_loaded and s.model_commit is None and s.placement == {} and s.stats.rows == 0
    ok = InstructionSynthesizer(max_new_tokens=1, max_model_len=2, max_batch_tokens=1, draft_tokens=1, ngram=2,
                                speculative="prompt_lookup", engine="native")
    assert (ok.max_new_tokens, ok.max_model_len, ok.max_batch_tokens, ok.draft_tokens, ok.ngram) == (1, 2, 1, 1, 2)
    for kw, message in [({"max_new_tokens": 0}, r"max_new_tokens must be at least 1, got 0"),
                        ({"max_new_tokens": 8, "max_model_len": 8},
                         r"max_model_len \(8\) must exceed max_new_tokens \(8\): the prompt needs room too"),
                        ({"on_overflow": "drop"}, r"on_overflow must be 'truncate' or 'error', got 'drop'"),
                        ({"on_invalid": "ignore"}, r"on_invalid must be 'error' or 'skip', got 'ignore'"),
                        ({"engine": "fast"}, r"engine must be one of \(.*'native'.*'auto'\) or an Engine instance, got 'fast'"),
                        ({"engine": object()}, r"engine must be a name or an object with generate\(prompts, stats\)"),
                        ({"speculative": "eagle"}, r"speculative must be None or 'prompt_lookup', got 'eagle'"),
                        ({"speculative": "prompt_lookup", "engine": "static"},
                         r"speculative='prompt_lookup' needs engine='native' or 'vllm' \(or 'auto'\), not 'static'"),
                        ({"draft_tokens": 0}, r"need draft_tokens >= 1 and ngram >= 2, got 0 and 3"),
                        ({"ngram": 1}, r"need draft_tokens >= 1 and ngram >= 2, got 4 and 1"),
                        ({"max_batch_tokens": 0}, r"max_batch_tokens must be positive, got 0")]:
        with pytest.raises(ValueError, match=f"^{message}"):
            InstructionSynthesizer(**kw)


def test_generation_settings_in_the_card_say_how_the_text_was_decoded():
    settings = InstructionSynthesizer(max_new_tokens=300, max_model_len=2048, dedupe=False, on_invalid="skip")
    assert settings.generation_settings().card() == {
        "decoding": "greedy", "max_new_tokens": 300, "max_model_len": 2048, "dedupe_questions": False,
        "on_overflow": "truncate", "on_invalid": "skip", "speculative": "off"}
    drafting = InstructionSynthesizer(speculative="prompt_lookup", draft_tokens=5, ngram=4).generation_settings()
    assert drafting.card()["speculative"] == "prompt_lookup (5 draft tokens, n-grams up to 4)"
    assert drafting.identity()["draft_tokens"] == 5 and drafting.identity()["ngram"] == 4
    assert "draft_tokens" not in settings.generation_settings().identity()  # drafting off: they decide nothing


def test_loading_builds_the_engine_from_every_setting_and_records_where_it_loaded(tiny_model_dir, tiny_tokenizer):
    synth = InstructionSynthesizer(model=str(tiny_model_dir), engine="native", max_new_tokens=9, max_model_len=300,
                                   max_batch_tokens=777, max_pad_fraction=0.3, speculative="prompt_lookup",
                                   draft_tokens=5, ngram=4)
    out = synth({"text": ["One text.", "Two texts here."]}, [10, 11], 3)  # with_indices=True, with_rank=True
    engine = synth._loaded["engine"]
    assert type(engine).__name__ == "NativeEngine"
    assert (engine.max_new_tokens, engine.max_batch_tokens, engine.max_pad_fraction, engine.speculative,
            engine.draft_tokens, engine.ngram) == (9, 777, 0.3, "prompt_lookup", 5, 4)
    assert engine.eos == {tiny_tokenizer.eos_token_id} and engine.pad_token_id == tiny_tokenizer.pad_token_id
    assert synth.placement == {"rank": 3, "gpu": None, "device": "cpu", "attn_implementation": "sdpa",
                               "dtype": "float32"}  # the rank ds.map passed, after the indices
    assert len(out["synthesizer_output"]) == 2 and synth.stats.rows == 2 and synth.stats.wall_time_s > 0
    static = InstructionSynthesizer(model=str(tiny_model_dir), engine="static", max_new_tokens=7)
    static({"text": ["x y."]}, [0])  # with_indices=True only: no rank
    assert type(static._loaded["engine"]).__name__ == "StaticEngine" and static._loaded["engine"].max_new_tokens == 7
    assert static.placement["rank"] is None and static._loaded["tokenizer"].pad_token_id == tiny_tokenizer.pad_token_id


def test_control_ids_come_from_the_tokenizer_and_from_its_vocabulary_when_it_names_none(tiny_tokenizer):
    """``<s>``/``</s>`` are the tokenizer's BOS/EOS ids; a tokenizer that declares no BOS still has
    ``<s>`` in its vocabulary, and prompts use that id (never ``None``)."""
    import copy

    from hf_instruct_synth.testing import ScriptedEngine

    tok = copy.deepcopy(tiny_tokenizer)
    synth = InstructionSynthesizer(model="unused", engine=ScriptedEngine(tokenizer=tok))
    synth.load()
    assert (synth._control_id("<s>"), synth._control_id("</s>")) == (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    tok.bos_token, tok.eos_token = "</CON>", "<QUE>"  # declared ids differ from the wire format's tokens' ids
    assert synth._control_id("<s>") == tok.bos_token_id != 1 and synth._control_id("</s>") == tok.eos_token_id != 2
    tok.bos_token = None
    assert tok.bos_token_id is None and synth._control_id("<s>") == 1
    assert synth.encode_prompt("x")[0] == 1


def test_the_output_features_name_the_pair_fields_of_the_wire_format():
    from datasets import Features, List, Value

    from hf_instruct_synth import synthesizer

    pair = {"instruction": Value("string"), "response": Value("string")}
    assert synthesizer.OUTPUT_FEATURES == Features({"instruction_response_pairs": List(pair),
                                                    "synthesizer_output": Value("string")})
    with pytest.raises(AttributeError, match="^NO_SUCH_NAME$"):
        synthesizer.NO_SUCH_NAME  # noqa: B018


def test_the_fingerprint_changes_with_the_tokenizer_and_each_output_deciding_setting(tiny_model_dir, tiny_tokenizer):
    """datasets caches ``ds.map`` on the fingerprint: whatever changes the outputs must change it."""
    import copy

    other = copy.deepcopy(tiny_tokenizer)
    other.add_tokens(["<extra-token>"])
    base = InstructionSynthesizer(model=str(tiny_model_dir))
    prints = {base.fingerprint(), InstructionSynthesizer(model=str(tiny_model_dir), tokenizer=tiny_tokenizer).fingerprint(),
              InstructionSynthesizer(model=str(tiny_model_dir), tokenizer=other).fingerprint(),
              InstructionSynthesizer(model=str(tiny_model_dir), max_new_tokens=8).fingerprint()}
    assert len(prints) == 4
    assert InstructionSynthesizer(model="org/m", revision="v1").fingerprint() != InstructionSynthesizer(
        model="org/m", revision="v2").fingerprint()  # a Hub model's revision (a folder has none)
    settings = [{}, {"text_column": "body"}, {"dtype": "bfloat16"}, {"attn_implementation": "eager"},
                {"on_invalid": "skip"}, {"dedupe": False}, {"max_model_len": 2048}]
    assert len({InstructionSynthesizer(model="org/m", **kw).fingerprint() for kw in settings}) == len(settings)
    assert len(base.fingerprint()) == 32

    class EngineA:
        def generate(self, prompts, stats):
            return [[] for _ in prompts]

    class EngineB(EngineA):
        pass

    class Named(EngineA):
        def __init__(self, name):
            self.name_ = name

        def fingerprint(self):
            return self.name_

    engines = [EngineA(), EngineB(), Named("x"), Named("y")]  # an engine's own fingerprint, else its class
    assert len({InstructionSynthesizer(model="org/m", engine=e).fingerprint() for e in engines}) == 4
    assert InstructionSynthesizer(model="org/m", engine=Named("x")).fingerprint() == InstructionSynthesizer(
        model="org/m", engine=Named("x")).fingerprint()
    assert base.fingerprint() == InstructionSynthesizer(model=str(tiny_model_dir)).fingerprint()  # and stable


def test_settings_name_the_model_as_the_card_shows_it(tiny_model_dir, tiny_model, monkeypatch):
    from hf_instruct_synth import DEMO_MODEL, __version__
    from hf_instruct_synth.loading import identity
    from hf_instruct_synth.testing import ScriptedEngine

    hub = InstructionSynthesizer(model="org/synth", revision="v1", max_new_tokens=300).settings()
    assert hub == {"model": "org/synth", "model_revision": "v1", "decoding": "greedy", "max_new_tokens": 300,
                   "max_model_len": 4096, "dedupe_questions": True, "on_overflow": "truncate", "on_invalid": "error",
                   "speculative": "off", "engine": "auto", "hf_instruct_synth": __version__}
    assert InstructionSynthesizer(model="org/synth").settings()["model_revision"] == "main"
    pinned = InstructionSynthesizer(model="org/synth", revision="v1")
    pinned.pin_revision("c" * 40)
    assert pinned.settings()["model_revision"] == "c" * 40 and pinned.model_commit == "c" * 40
    assert InstructionSynthesizer(model=DEMO_MODEL).settings()["model"] == (
        "hf-instruct-synth demo synthesizer (a tiny demonstration model)")
    local = InstructionSynthesizer(model=str(tiny_model_dir)).settings()["model"]
    assert local == f"{tiny_model_dir.name} (local folder, digest {identity(str(tiny_model_dir))[4:]})"
    assert str(tiny_model_dir.parent) not in local  # never the machine's path
    tiny_model.name_or_path = "org/loaded"
    assert InstructionSynthesizer(model=tiny_model).settings()["model"] == "org/loaded"
    scripted = InstructionSynthesizer(model="unused", engine=ScriptedEngine())
    assert scripted.settings()["engine"] == "scripted"


def test_pinning_resolving_and_loading_by_rank(monkeypatch):
    from hf_instruct_synth import loading
    from hf_instruct_synth.testing import ScriptedEngine

    asked = []
    monkeypatch.setattr(loading, "resolve_commit", lambda model, rev: asked.append((model, rev)) or "d" * 40)
    synth = InstructionSynthesizer(model="org/synth", revision="v1")
    assert synth.resolve_commit() == "d" * 40 and asked == [("org/synth", "v1")]
    synth.pin_revision(None)
    assert synth.model_commit is None  # nothing to pin
    synth.pin_revision("e" * 40)
    assert synth.resolve_commit() == "e" * 40 and len(asked) == 1  # a resumed run's commit, not asked again
    assert InstructionSynthesizer(model="org/synth", engine=ScriptedEngine()).resolve_commit() is None
    loaded = InstructionSynthesizer(model="unused", engine=ScriptedEngine())
    loaded.load(rank=2)
    assert loaded.placement["rank"] == 2 and loaded.is_loaded
    loaded.pin_revision("f" * 40)
    assert loaded.model_commit is None  # too late: the model is loaded


class _Canned:
    """An engine that writes, for each prompt, the output canned for its text."""

    name = "canned"

    def __init__(self, tokenizer, outputs: dict[str, str]):
        self.tokenizer, self.outputs, self.prompts = tokenizer, outputs, []

    def generate(self, prompts, stats):
        self.prompts += prompts
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids).rsplit("<CON> ", 1)[-1].rsplit(" </CON>", 1)[0]
            out.append(self.tokenizer(self.outputs[text], add_special_tokens=False)["input_ids"])
        return out


def test_duplicates_and_loops_are_dropped_per_row_and_counted_across_batches(tiny_tokenizer):
    loop = " ".join(["of the river"] * 12)
    outputs = {"A.": "<QUE> Who? <ANS> Ada </END><QUE> who? <ANS> Bob </END><QUE> Where? <ANS> Rome </END>",
               "B.": f"<QUE> What? <ANS> {loop} </END><QUE> Why? <ANS> Because </END>",
               "C.": f"<QUE> {loop}? <ANS> Yes </END><QUE> When? <ANS> 1900 </END>", "D.": "no items at all"}
    synth = InstructionSynthesizer(model="unused", engine=_Canned(tiny_tokenizer, outputs))
    first = synth({"text": ["A.", "B."]})
    assert first["instruction_response_pairs"] == [
        [{"instruction": "Who?", "response": "Ada"}, {"instruction": "Where?", "response": "Rome"}],
        [{"instruction": "Why?", "response": "Because"}]]  # the second "who?" a duplicate; a looping answer dropped
    second = synth({"text": ["C.", "D.", "A."]})
    assert second["instruction_response_pairs"][:2] == [[{"instruction": "When?", "response": "1900"}], []]
    s = synth.stats  # counted over both calls
    assert (s.rows, s.pairs, s.rows_without_pairs, s.duplicate_questions, s.repetition_loops) == (5, 6, 1, 2, 2)
    assert s.pairs_per_row == {"2": 2, "1": 2, "0": 1} and 0 < s.wall_time_s < 60
    kept = InstructionSynthesizer(model="unused", engine=_Canned(tiny_tokenizer, outputs), dedupe=False)
    assert len(kept({"text": ["A."]})["instruction_response_pairs"][0]) == 3 and kept.stats.duplicate_questions == 0
    marked = InstructionSynthesizer(model="unused", engine=_Canned(tiny_tokenizer, {"x </s> y": "", "<s>": ""}))
    marked({"text": ["x </s> y", "<s>"]})
    marked({"text": ["<s>"]})
    assert marked.stats.rows_with_markers == 3


def test_the_batched_path_cuts_long_prompts_at_the_exact_token_and_names_dataset_rows(tiny_tokenizer):
    """Uneven text (plain words, then characters of many tokens each): only the offsets find the longest
    prefix that fits; a proportional cut falls short. A prompt that fits exactly is left alone."""
    from hf_instruct_synth.testing import ScriptedEngine

    uneven = " ".join(f"word{i}" for i in range(40)) + " " + "€ü" * 200
    engine = _Canned(tiny_tokenizer, {})
    engine.outputs = type("Any", (dict,), {"__missing__": lambda self, k: ""})()
    synth = InstructionSynthesizer(model="unused", engine=engine, max_model_len=72, max_new_tokens=8)
    synth({"text": [uneven, "short."]})
    assert sorted(len(p) for p in engine.prompts)[-1] == 64 and synth.stats.rows_truncated == 1
    exact = synth.encode_prompt("short.")
    fits = InstructionSynthesizer(model="unused", engine=ScriptedEngine(tokenizer=tiny_tokenizer),
                                  max_model_len=len(exact) + 8, max_new_tokens=8)
    assert fits.fit_prompt("short.", "row 0") == exact and fits.stats.rows_truncated == 0  # exactly at the limit
    with pytest.raises(ValueError, match=r"^row 11: the prompt has \d+ tokens, more than max_model_len - "
                                         r"max_new_tokens = 64\. Raise max_model_len"):
        InstructionSynthesizer(model="unused", engine=engine, max_model_len=72, max_new_tokens=8,
                               on_overflow="error")({"text": ["short.", uneven]}, [10, 11])
    tiny = InstructionSynthesizer(model="unused", engine=engine, max_model_len=12, max_new_tokens=8)
    with pytest.raises(ValueError, match=r"^max_model_len - max_new_tokens = 4 tokens cannot hold even an empty "
                                         r"prompt \(\d+ tokens\); raise max_model_len or lower max_new_tokens\.$"):
        tiny({"text": ["some text here."]})


def test_forced_placement_and_the_models_own_stop_ids_reach_the_engine(tiny_model, tiny_tokenizer, tiny_model_dir):
    """dtype/attention/device given by the user win over the defaults; a model whose generation config
    lists more stop ids than the tokenizer's EOS (as instruction-tuned checkpoints do) stops on them all."""
    import copy

    model = copy.deepcopy(tiny_model)
    model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, 7]
    synth = InstructionSynthesizer(model=model, tokenizer=tiny_tokenizer, engine="native", device="cpu",
                                   dtype="bfloat16", attn_implementation="eager", max_new_tokens=4)
    synth.load()
    assert synth._loaded["engine"].eos == {tiny_tokenizer.eos_token_id, 7}
    assert synth.placement["dtype"] == "float32"  # a model object runs as its caller built it, and says so
    by_name = InstructionSynthesizer(model=str(tiny_model_dir), engine="native", device="cpu", dtype="bfloat16",
                                     attn_implementation="eager", max_new_tokens=4)
    by_name.load()
    assert by_name.placement == {"rank": None, "gpu": None, "device": "cpu", "attn_implementation": "eager",
                                 "dtype": "bfloat16"}
    assert by_name._loaded["model"].dtype == torch.bfloat16  # loaded as asked
