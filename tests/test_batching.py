from __future__ import annotations

import random

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from hf_instruct_synth.batching import left_pad, token_budget_buckets


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 500), max_size=80), st.integers(0, 64), st.integers(64, 4096),
       st.sampled_from([1, 8]), st.booleans(), st.sampled_from([None, 0.1, 0.3]), st.sampled_from([None, 600, 3000]))
def test_buckets_cover_every_row_once_and_respect_the_budget(lengths, new, budget, multiple, sort, max_pad,
                                                             max_prompt):
    buckets = token_budget_buckets(lengths, new, budget, pad_to_multiple_of=multiple, sort=sort,
                                   max_pad_fraction=max_pad, max_prompt_tokens=max_prompt)
    seen = sorted(i for b in buckets for i in b.indices)
    assert seen == list(range(len(lengths)))
    for b in buckets:
        assert b.width >= max(lengths[i] for i in b.indices) and b.width % multiple == 0
        assert b.width == -(-max(lengths[i] for i in b.indices) // multiple) * multiple  # no wider than needed
        if len(b.indices) > 1:
            assert len(b.indices) * (b.width + new) <= budget
            if max_prompt is not None:
                assert len(b.indices) * b.width <= max_prompt
            if max_pad is not None:  # padding from length differences; the rounding is the same for every row
                longest = max(lengths[i] for i in b.indices)
                assert sum(longest - lengths[i] for i in b.indices) <= max_pad * len(b.indices) * longest


def test_rounding_to_a_multiple_is_not_counted_as_padding():
    buckets = token_budget_buckets([57] * 100, 16, 10**6, pad_to_multiple_of=8, max_pad_fraction=0.1)
    assert len(buckets) == 1 and buckets[0].width == 64


def test_longest_prompts_go_first():
    buckets = token_budget_buckets([5, 300, 40, 120, 7], 10, 400)
    assert buckets[0].indices[0] == 1 and [len(b.indices) for b in buckets][0] == 1
    firsts = [max(b.indices, key=lambda i: [5, 300, 40, 120, 7][i]) for b in buckets]
    widths = [b.width for b in buckets]
    assert widths == sorted(widths, reverse=True) and firsts[0] == 1


def test_sorting_reduces_padding_on_a_skewed_mix():
    rng = random.Random(0)
    lengths = [min(2000, int(rng.lognormvariate(4.5, 1.0))) for _ in range(500)]
    pad = {s: sum(b.pad_tokens(lengths) for b in token_budget_buckets(lengths, 64, 16384, sort=s))
           for s in (True, False)}
    assert pad[True] * 5 < pad[False]


def test_pad_limit_bounds_the_pad_share_on_a_skewed_mix():
    rng = random.Random(1)
    lengths = [min(2000, int(rng.lognormvariate(4.5, 1.0))) for _ in range(500)]
    buckets = token_budget_buckets(lengths, 64, 16384, max_pad_fraction=0.1)
    pad = sum(b.pad_tokens(lengths) for b in buckets)
    assert pad <= 0.1 * (sum(lengths) + pad)


def test_left_pad():
    assert left_pad([[1, 2, 3], [4]], 4, 0) == ([[0, 1, 2, 3], [0, 0, 0, 4]], [[0, 1, 1, 1], [0, 0, 0, 1]])


def test_exact_fits_are_allowed_and_limits_do_not_over_cut():
    # rows x (width + new) == budget: one bucket, not two
    assert len(token_budget_buckets([10, 10], 5, 30)) == 1 and len(token_budget_buckets([10, 10], 5, 29)) == 2
    # padded prompt positions exactly at the cap: one bucket
    assert len(token_budget_buckets([10, 10], 0, 10**6, max_prompt_tokens=20)) == 1
    assert len(token_budget_buckets([10, 10], 0, 10**6, max_prompt_tokens=19)) == 2
    # padding exactly at the limit is allowed; lengths well within it share a bucket
    assert len(token_budget_buckets([10, 8], 0, 10**6, max_pad_fraction=0.1)) == 1  # pad 2 = 0.1 x 2 x 10
    assert len(token_budget_buckets([10, 7], 0, 10**6, max_pad_fraction=0.1)) == 2
    assert len(token_budget_buckets([100, 95, 92], 0, 10**6, max_pad_fraction=0.1)) == 1


def test_defaults_round_nothing_and_the_budget_must_be_positive():
    from hf_instruct_synth.batching import round_up

    assert [b.width for b in token_budget_buckets([7, 5], 0, 100)] == [7]  # no rounding by default
    assert round_up(5, 2) == 6 and round_up(6, 2) == 6 and round_up(5, 1) == 5 and round_up(9, 8) == 16
    with pytest.raises(ValueError, match="max_batch_tokens must be positive, got 0"):
        token_budget_buckets([1], 0, 0)
    assert token_budget_buckets([1], 0, 1)[0].indices == [0]


def test_left_pad_fills_to_width_and_refuses_a_row_too_long():
    assert left_pad([[1, 2, 3]], 3, 0) == ([[1, 2, 3]], [[1, 1, 1]])  # a row exactly as wide
    with pytest.raises(ValueError, match="row of 4 tokens does not fit width 3"):
        left_pad([[1, 2, 3, 4]], 3, 0)
