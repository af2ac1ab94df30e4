"""Static batching: length-sorted, token-budget sub-batches through ``model.generate``.

One obvious path: sort, cut by budget, left-pad, greedy ``generate``, cut each row at
EOS, put rows back. An out-of-memory error splits the sub-batch in two and retries.
"""

from __future__ import annotations

import torch

from ..batching import Bucket, left_pad, round_up, token_budget_buckets
from ..stats import SynthesisStats
from . import finish_row, greedy_config


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


class StaticEngine:
    name = "static"

    def __init__(self, model, *, pad_token_id: int, eos_token_ids: list[int], max_new_tokens: int,
                 max_batch_tokens: int, pad_to_multiple_of: int = 1, sort: bool = True,
                 max_pad_fraction: float | None = None, max_prompt_tokens: int | None = None):
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_ids = set(eos_token_ids)
        self.max_new_tokens = max_new_tokens
        self.max_batch_tokens = max_batch_tokens
        self.pad_to_multiple_of = pad_to_multiple_of
        self.sort = sort
        self.max_pad_fraction = max_pad_fraction
        self.max_prompt_tokens = max_prompt_tokens
        self.generation_config = greedy_config(max_new_tokens, eos_token_ids, pad_token_id)

    def generate(self, prompts: list[list[int]], stats: SynthesisStats) -> list[list[int]]:
        lengths = [len(p) for p in prompts]
        outputs: list[list[int] | None] = [None] * len(prompts)
        buckets = token_budget_buckets(lengths, self.max_new_tokens, self.max_batch_tokens,
                                       pad_to_multiple_of=self.pad_to_multiple_of, sort=self.sort,
                                       max_pad_fraction=self.max_pad_fraction,
                                       max_prompt_tokens=self.max_prompt_tokens)
        pending = list(reversed(buckets))
        while pending:
            bucket = pending.pop()
            if len(bucket.indices) > 1 and self._cost(bucket) > self.max_batch_tokens:
                pending += self._halves(bucket, lengths)  # cut with a budget an OOM has lowered since
                continue
            oom = False
            try:
                generated = self._run(bucket, prompts)
            except Exception as err:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_oom(err) or len(bucket.indices) == 1:
                    raise
                oom = True
            if oom:  # outside the except: the traceback no longer holds the failed batch's tensors
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                # this size does not fit: every later sub-batch is held under it too
                self.max_batch_tokens = max(1, min(self.max_batch_tokens, self._cost(bucket) * 3 // 4))
                stats.oom_splits += 1
                pending += self._halves(bucket, lengths)
                continue
            stats.batches += 1
            stats.prompt_tokens += sum(lengths[i] for i in bucket.indices)
            stats.pad_tokens += bucket.pad_tokens(lengths)
            for i, row in zip(bucket.indices, generated):
                outputs[i] = finish_row(row, self.eos_token_ids, stats)
        return outputs  # type: ignore[return-value]

    def _cost(self, bucket: Bucket) -> int:
        return len(bucket.indices) * (bucket.width + self.max_new_tokens)

    def _halves(self, bucket: Bucket, lengths: list[int]) -> list[Bucket]:
        """The two halves of a bucket, in the order the pending stack pops them (first half first)."""
        half = len(bucket.indices) // 2
        return [Bucket(part, round_up(max(lengths[i] for i in part), self.pad_to_multiple_of))
                for part in (bucket.indices[half:], bucket.indices[:half])]

    @torch.inference_mode()
    def _run(self, bucket: Bucket, prompts: list[list[int]]) -> list[list[int]]:
        """Generate one padded sub-batch; each row's generated tokens (padding after EOS included)."""
        ids, mask = left_pad([prompts[i] for i in bucket.indices], bucket.width, self.pad_token_id)
        device = self.model.device
        input_ids = torch.tensor(ids, dtype=torch.long, device=device)
        attention_mask = torch.tensor(mask, dtype=torch.long, device=device)
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                  generation_config=self.generation_config)
        return out[:, bucket.width:].tolist()
