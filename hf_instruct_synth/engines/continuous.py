"""Continuous batching through transformers' ``generate_batch`` (paged KV cache, no padding).

Requests join and leave the running batch as they start and finish, so rows that stop
early free their slots at once. On CPU with tiny models its per-step Python overhead makes
it slower than the static engine (benchmarks/RESULTS.md); on a GPU with varied output
lengths it is expected to win, which is still to be measured.
"""

from __future__ import annotations

from ..stats import SynthesisStats
from . import finish_row, greedy_config


class ContinuousEngine:
    name = "continuous"

    def __init__(self, model, *, pad_token_id: int, eos_token_ids: list[int], max_new_tokens: int,
                 max_batch_tokens: int, **_: object):
        if not hasattr(model, "generate_batch"):
            raise ValueError("engine='continuous' needs a transformers version with continuous batching "
                             "(model.generate_batch); upgrade transformers or use engine='static'")
        self.model = model
        self.eos_token_ids = set(eos_token_ids)
        self.max_batch_tokens = max_batch_tokens
        self.generation_config = greedy_config(max_new_tokens, eos_token_ids, pad_token_id)
        self.cache_config = None
        if not str(model.device).startswith("cuda"):
            # Off GPU transformers would size the paged cache from host memory (GiBs for a tiny
            # model); hold it to our token budget instead. On a GPU it sizes from free memory.
            from transformers import ContinuousBatchingConfig

            page = 256
            self.cache_config = ContinuousBatchingConfig(page_size=page, num_blocks=max(2, -(-max_batch_tokens // page)))

    def generate(self, prompts: list[list[int]], stats: SynthesisStats) -> list[list[int]]:
        if not prompts:
            return []
        extra = {"continuous_batching_config": self.cache_config} if self.cache_config is not None else {}
        results = self.model.generate_batch(inputs=prompts, generation_config=self.generation_config,
                                            progress_bar=False, **extra)
        expected = [f"req_{i}" for i in range(len(prompts))]
        if sorted(results) != sorted(expected):  # ids are how rows find their place: never guess
            raise RuntimeError(f"continuous batching returned {len(results)} results for {len(prompts)} prompts "
                               "with unexpected request ids; use engine='static'")
        outputs = []
        for key, prompt in zip(expected, prompts):
            stats.prompt_tokens += len(prompt)
            outputs.append(finish_row(list(results[key].generated_tokens), self.eos_token_ids, stats))
        stats.batches += 1
        return outputs
