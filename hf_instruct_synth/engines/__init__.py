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


def make_engine(name: str, model, *, pad_token_id: int, eos_token_ids: list[int], max_new_tokens: int,
                max_batch_tokens: int, pad_to_multiple_of: int = 1, max_pad_fraction: float | None = None,
                max_prompt_tokens: int | None = None, speculative: str | None = None, draft_tokens: int = 4,
                ngram: int = 3) -> Engine:
    """Build the engine called ``name`` for a loaded model (the synthesizer resolves ``"auto"`` first:
    ``InstructionSynthesizer.resolved_engine``; vLLM loads its own model: ``engines.vllm.VllmEngine``)."""
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
    if name == "vllm":
        raise ValueError("engine='vllm' loads the model itself: build it with engines.vllm.VllmEngine(model_id, ...)")
    raise ValueError(f"unknown engine {name!r}; choose one of {ENGINES} or 'auto'")
