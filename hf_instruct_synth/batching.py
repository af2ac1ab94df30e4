"""Length sort, token-budget buckets, left padding, and putting rows back in place.

Generation cost grows with ``rows × (longest prompt + max_new_tokens)`` in a padded
batch, so sub-batches are cut by that product (a token budget), not by a row count:
many short prompts go together, a long one goes with few others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """Indices (into the caller's list) of prompts generated together, and the padded width."""

    indices: list[int]
    width: int  # padded prompt length for this bucket

    def pad_tokens(self, lengths: Sequence[int]) -> int:
        return sum(self.width - lengths[i] for i in self.indices)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple if multiple > 1 else n


def token_budget_buckets(
    lengths: Sequence[int],
    max_new_tokens: int,
    max_batch_tokens: int,
    *,
    pad_to_multiple_of: int = 1,
    sort: bool = True,
    max_pad_fraction: float | None = None,
    max_prompt_tokens: int | None = None,
) -> list[Bucket]:
    """Cut prompts into buckets with ``rows × (width + max_new_tokens) <= max_batch_tokens``.

    With ``sort`` (default) prompts are taken longest first, so each bucket holds prompts
    of similar length and padding stays small; without it they keep their order (the
    baseline the benchmarks compare against). With ``max_pad_fraction`` a prompt also
    starts a new bucket when its padding would exceed that fraction of the bucket's width
    (so a bucket's pad share stays under it); the padding counted there is the one length
    differences make, not the rounding to ``pad_to_multiple_of`` (which every row of a width
    pays alike). With ``max_prompt_tokens`` a bucket's padded prompt positions, ``rows ×
    width``, also stay under it: the prompt pass is not chunked, and its activations need
    room beside the KV cache. A prompt that alone exceeds the budget gets a bucket of its own.

    Example:
        >>> [b.indices for b in token_budget_buckets([5, 50, 6, 48], max_new_tokens=10, max_batch_tokens=130)]
        [[1, 3], [2, 0]]
    """
    if max_batch_tokens <= 0:
        raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    buckets: list[Bucket] = []
    current: list[int] = []
    width = longest = filled = 0  # filled: real prompt tokens in the current bucket; longest: unrounded
    for i in order:
        new_width = max(width, round_up(lengths[i], pad_to_multiple_of))
        new_longest = max(longest, lengths[i])
        rows = len(current) + 1
        too_padded = (max_pad_fraction is not None
                      and rows * new_longest - filled - lengths[i] > max_pad_fraction * rows * new_longest)
        too_wide = max_prompt_tokens is not None and rows * new_width > max_prompt_tokens
        if current and (too_padded or too_wide or rows * (new_width + max_new_tokens) > max_batch_tokens):
            buckets.append(Bucket(current, width))
            current, filled = [], 0
            new_width, new_longest = round_up(lengths[i], pad_to_multiple_of), lengths[i]
        current.append(i)
        filled += lengths[i]
        width, longest = new_width, new_longest
    if current:
        buckets.append(Bucket(current, width))
    return buckets


def left_pad(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left-pad token rows to ``width``; return ``(input_ids, attention_mask)`` as lists.

    Example:
        >>> left_pad([[7, 8], [9]], 3, pad_id=0)
        ([[0, 7, 8], [0, 0, 9]], [[0, 1, 1], [0, 0, 1]])
    """
    ids, mask = [], []
    for row in rows:
        pad = width - len(row)
        if pad < 0:
            raise ValueError(f"row of {len(row)} tokens does not fit width {width}")
        ids.append([pad_id] * pad + list(row))
        mask.append([0] * pad + [1] * len(row))
    return ids, mask
