"""Our own generation loop: continuous batching over a transformers model, with prompt-lookup speculation.

One obvious data path, in the style of gpt-fast, over any causal LM whose forward takes
``attention_mask``, ``position_ids`` and a ``DynamicCache``:

- **prefill**: waiting prompts, longest first, are left-padded into a group whose size the
  token budget allows, run once, and their KV cache joins the running batch (the shorter
  of the two caches is left-padded in time; padding is masked);
- **decode**: one forward pass per step for every running row; a row that emits EOS or
  reaches ``max_new_tokens`` leaves at once (its cache rows are dropped), and when the batch
  has room again the next waiting prompts are prefilled and join it;
- **speculation** (``speculative="prompt_lookup"``): each row drafts up to ``draft_tokens``
  tokens by finding its last n-gram earlier in its own prompt and output and proposing
  what followed there; one forward pass verifies every row's draft, each row keeps its
  longest matching prefix plus the model's next token, and the rejected positions are
  masked out of the cache (compacted away when they pile up). The synthesizer copies from
  its context, so drafts are often right; greedy outputs equal plain decoding up to
  floating-point ties.

Every row's tokens are the model's own greedy choices at the row's own positions
(``position_ids`` count only real tokens), so left padding, rows joining late and masked
holes do not change what a row generates.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from ..stats import SynthesisStats
from .static import is_oom

SPECULATIVE = ("prompt_lookup",)


def _growing_cache():
    """A ``DynamicCache`` whose layers write into pre-allocated room (doubled when full) instead of
    re-allocating the whole cache with ``torch.cat`` at every step."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def set(self, keys: torch.Tensor, values: torch.Tensor, room: int = 64) -> None:
            """Hold these keys and values, with ``room`` free positions after them."""
            b, h, t, d = keys.shape
            self._k = keys.new_empty((b, h, t + room, d))
            self._v = values.new_empty((b, values.shape[1], t + room, values.shape[3]))
            self._k[:, :, :t], self._v[:, :, :t] = keys, values
            self.keys, self.values, self._t = self._k[:, :, :t], self._v[:, :, :t], t
            self.is_initialized, self.device = True, keys.device

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.set(key_states, value_states, room=max(64, key_states.shape[2]))
                return self.keys, self.values
            t, q = self._t, key_states.shape[2]
            if t + q > self._k.shape[2]:
                self.set(self.keys, self.values, room=max(64, t + q))
            self._k[:, :, t:t + q], self._v[:, :, t:t + q] = key_states, value_states
            self._t = t + q
            self.keys, self.values = self._k[:, :, :t + q], self._v[:, :, :t + q]
            return self.keys, self.values

        def drop_front(self, n: int) -> None:
            """Forget the first ``n`` positions (a view: no copy)."""
            self._k, self._v = self._k[:, :, n:], self._v[:, :, n:]
            self._t -= n
            self.keys, self.values = self._k[:, :, :self._t], self._v[:, :, :self._t]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.set(self.keys[indices], self.values[indices])

        def move_rows(self, moves: list[tuple[int, int]], rows: int) -> None:
            """Copy row ``src`` over row ``dst`` for each move, then keep the first ``rows`` rows (in place:
            only the moved rows are copied, not the whole cache)."""
            for dst, src in moves:
                self._k[dst].copy_(self._k[src])
                self._v[dst].copy_(self._v[src])
            self._k, self._v = self._k[:rows], self._v[:rows]
            self.keys, self.values = self._k[:, :, :self._t], self._v[:, :, :self._t]

    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    return cache


@dataclass
class _Row:
    index: int  # position in the caller's list
    tokens: list[int]  # prompt, then generated tokens
    ngram: int
    min_ngram: int = 2
    out: list[int] = field(default_factory=list)
    seen: dict = field(default_factory=dict)  # n-gram -> start of its latest earlier occurrence

    def __post_init__(self) -> None:
        for end in range(self.ngram, len(self.tokens)):  # n-grams whose continuation is known
            self._index(end)

    def _index(self, end: int) -> None:
        """Record the n-grams (every size up to ``ngram``) ending just before position ``end``."""
        for n in range(1, self.ngram + 1):
            if end - n >= 0:
                self.seen[tuple(self.tokens[end - n:end])] = end

    def push(self, token: int) -> None:
        self.tokens.append(token)
        self.out.append(token)
        self._index(len(self.tokens) - 1)

    def draft(self, k: int, min_ngram: int | None = None) -> tuple[list[int], int]:
        """Up to ``k`` tokens that followed the longest recent n-gram (``min_ngram`` tokens at least)
        matching the row's last tokens, and that n-gram's length (0: no draft)."""
        for n in range(min(self.ngram, len(self.tokens) - 1), (min_ngram or self.min_ngram) - 1, -1):
            start = self.seen.get(tuple(self.tokens[-n:]))
            if start is not None:
                return self.tokens[start:start + k], n
        return [], 0


class NativeEngine:
    """Continuous batching with optional prompt-lookup speculation; see the module docstring.

    ``max_batch_tokens`` bounds ``rows × (cache length + max_new_tokens)`` of the running
    batch (the KV cache it can grow to); ``max_prompt_tokens`` bounds a prefill group's
    padded prompt positions; ``max_pad_fraction`` bounds a group's padding. With ``adaptive``
    (default) each step's draft width is chosen for the most tokens per second from the measured
    cost of a pass and the acceptance so far; without it every draft is verified whole.

    Example:
        >>> engine = NativeEngine(model, pad_token_id=0, eos_token_ids=[2], max_new_tokens=64,
        ...                       max_batch_tokens=8192, speculative="prompt_lookup")  # doctest: +SKIP
        >>> engine.generate([[1, 5, 9], [1, 7]], SynthesisStats())  # doctest: +SKIP
    """

    name = "native"

    def __init__(self, model, *, pad_token_id: int, eos_token_ids: list[int], max_new_tokens: int,
                 max_batch_tokens: int, max_prompt_tokens: int | None = None, max_pad_fraction: float | None = 0.1,
                 speculative: str | None = None, draft_tokens: int = 4, ngram: int = 3, min_ngram: int = 2,
                 adaptive: bool = True, refill_fraction: float = 0.5) -> None:
        if speculative not in (None, *SPECULATIVE):
            raise ValueError(f"speculative must be None or one of {SPECULATIVE}, got {speculative!r}")
        if draft_tokens < 1 or not 1 <= min_ngram <= ngram:
            raise ValueError(f"need draft_tokens >= 1 and 1 <= min_ngram <= ngram, got {draft_tokens}, {min_ngram}, "
                             f"{ngram}")
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos = set(eos_token_ids)
        self.max_new_tokens = max_new_tokens
        self.max_batch_tokens = max_batch_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.max_pad_fraction = max_pad_fraction
        self.speculative = speculative
        self.draft_tokens = draft_tokens
        self.ngram = ngram
        self.min_ngram = min_ngram
        self.adaptive = adaptive  # choose each step's draft width from measured costs (else always the widest)
        self.refill_fraction = refill_fraction
        self._holes = False  # a verify pass left masked cache entries: trim and compact
        self._passes: list[tuple[int, float]] = []  # (tokens, seconds) of recent forward passes
        self._tier_stats: dict[int, tuple[int, int]] = {}  # n-gram length -> (accepted, proposed) drafts
        import inspect

        # transformers renamed past_key_values to cache (5.2x); the GPU image's 5.17 knows only the old name
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _forward(self, cache, **inputs):
        return self.model(**inputs, **{self._cache_arg: cache}, use_cache=True)

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], stats: SynthesisStats,
                 limits: list[int] | None = None) -> list[list[int]]:
        """Greedy continuations of ``prompts`` (EOS and padding removed), in the prompts' order.

        ``limits`` gives each prompt its own ``max_new_tokens`` (benchmarks use it to fix every
        row's output length); default: ``max_new_tokens`` for all.
        """
        cap = limits if limits is not None else [self.max_new_tokens] * len(prompts)
        outputs: list[list[int] | None] = [None] * len(prompts)
        waiting = deque(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])))
        rows: list[_Row] = []
        cache, mask = None, None  # mask: [rows, cache length], 1 where the cache holds a real token
        last = None  # [rows] the token each row feeds next
        ngram = self.ngram if self.speculative else 1
        while waiting or rows:
            passing = 0  # rows in the forward pass under way (an OOM of a single row is not retried)
            try:
                if waiting and (not rows or len(rows) < self.refill_fraction * self._capacity(mask)):
                    group = self._admit(waiting, prompts, rows, mask)
                    if group:
                        passing = len(group)
                        try:
                            cache, mask, last = self._join(cache, mask, last, group, prompts, stats)
                        except BaseException:
                            waiting.extendleft(reversed(group))  # back in line, in order
                            raise
                        rows += [_Row(i, list(prompts[i]), ngram, min(self.min_ngram, ngram))
                                 for i in group]
                        for row, token in zip(rows[-len(group):], last[-len(group):].tolist()):
                            row.push(token)
                        stats.generated_tokens += len(group)
                passing = len(rows)
                if self.speculative:
                    new_tokens, new_mask = self._speculate(rows, cache, mask, last, stats, cap)
                else:
                    new_tokens, new_mask = self._step(rows, cache, mask, last)
            except Exception as err:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_oom(err) or passing <= 1:
                    raise
                oom = True
            else:
                oom = False
            if oom:  # outside the except: the traceback no longer holds the failed pass's tensors
                rows, cache, mask, last = self._shed(rows, cache, mask, last, waiting, stats)
                continue
            mask = new_mask
            # who is finished; what each row feeds next
            keep, nxt = [], []
            for r, (row, fresh) in enumerate(zip(rows, new_tokens)):
                limit = cap[row.index]
                done = bool(row.out) and (row.out[-1] in self.eos or len(row.out) >= limit)
                for token in fresh:
                    if done:
                        break
                    row.push(token)
                    stats.generated_tokens += 1
                    done = token in self.eos or len(row.out) >= limit
                if done:
                    outputs[row.index] = [t for t in row.out[:limit] if t not in self.eos]
                else:
                    keep.append(r)
                    nxt.append(row.out[-1])
            if len(keep) < len(rows):
                if keep:
                    # the last running rows fill the places of those that left: only they are copied
                    n, kept = len(keep), set(keep)
                    holes = [r for r in range(n) if r not in kept]
                    movers = [r for r in keep if r >= n]
                    moves = list(zip(holes, movers))
                    for layer in cache.layers:
                        layer.move_rows(moves, n)
                    order = list(range(n))
                    for dst, src in moves:
                        order[dst] = src
                    index = torch.tensor(order, device=mask.device)
                    mask = mask[index]
                    position = {r: i for i, r in enumerate(keep)}
                    nxt = [nxt[position[r]] for r in order]
                    rows = [rows[r] for r in order]
                else:
                    rows, cache, mask = [], None, None
            if rows and (len(keep) < len(new_tokens) or self._holes):
                cache, mask = self._trim(cache, mask)
                self._holes = False
            last = torch.tensor(nxt, device=self.model.device) if rows else None
        return outputs  # type: ignore[return-value]

    def _shed(self, rows, cache, mask, last, waiting, stats):
        """After an out-of-memory error: lower the budget and send the newest half of the running rows
        back to the queue (they restart from their prompt: greedy, so their outputs do not change)."""
        if cache is not None:  # a pass that failed midway may have appended to some layers: undo it
            for layer in cache.layers:
                layer.set(layer.keys[:, :, :mask.shape[1]], layer.values[:, :, :mask.shape[1]])
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        stats.oom_splits += 1
        width = mask.shape[1] if mask is not None else max((len(r.tokens) for r in rows), default=1)
        cost = max(1, len(rows)) * (width + self.max_new_tokens)
        self.max_batch_tokens = max(1, min(self.max_batch_tokens, cost * 3 // 4))
        if self.max_prompt_tokens is not None:
            self.max_prompt_tokens = max(1, self.max_prompt_tokens * 3 // 4)
        if len(rows) <= 1:
            return rows, cache, mask, last
        keep = len(rows) // 2
        for row in reversed(rows[keep:]):
            stats.generated_tokens -= len(row.out)  # counted again when it runs
            waiting.appendleft(row.index)
        index = torch.arange(keep, device=mask.device)
        cache.batch_select_indices(index)
        return rows[:keep], cache, mask[:keep], last[:keep]

    def _capacity(self, mask) -> int:
        width = mask.shape[1] if mask is not None else 0
        return max(1, self.max_batch_tokens // max(1, width + self.max_new_tokens))

    def _admit(self, waiting: deque, prompts, rows, mask) -> list[int]:
        """The next waiting prompts (longest first) that fit beside the running rows."""
        width = mask.shape[1] if mask is not None else 0
        group: list[int] = []
        longest = filled = 0
        while waiting:
            i = waiting[0]
            n = len(prompts[i])
            new_longest = max(longest, n)
            total_rows = len(rows) + len(group) + 1
            cost = total_rows * (max(width, new_longest) + self.max_new_tokens)
            padded = (len(group) + 1) * new_longest
            if group and (cost > self.max_batch_tokens
                          or (self.max_prompt_tokens is not None and padded > self.max_prompt_tokens)
                          or (self.max_pad_fraction is not None
                              and padded - filled - n > self.max_pad_fraction * padded)):
                break
            if not group and rows and cost > self.max_batch_tokens:
                break  # the running rows leave first
            group.append(waiting.popleft())
            longest, filled = new_longest, filled + n
        return group

    def _join(self, cache, mask, last, group, prompts, stats):
        """Prefill ``group`` and merge its cache, mask and first tokens into the running batch's."""
        device = self.model.device
        width = max(len(prompts[i]) for i in group)
        ids = torch.full((len(group), width), self.pad_token_id, dtype=torch.long)
        new_mask = torch.zeros((len(group), width), dtype=torch.long)
        for r, i in enumerate(group):
            p = prompts[i]
            ids[r, width - len(p):] = torch.tensor(p)
            new_mask[r, width - len(p):] = 1
        ids, new_mask = ids.to(device), new_mask.to(device)
        positions = (new_mask.cumsum(-1) - 1).clamp(min=0)
        new_cache = _growing_cache()
        out = self._forward(new_cache, input_ids=ids, attention_mask=new_mask, position_ids=positions, logits_to_keep=1)
        first = out.logits[:, -1].argmax(-1)
        stats.batches += 1
        stats.prompt_tokens += int(new_mask.sum())
        stats.pad_tokens += int(new_mask.numel() - new_mask.sum())
        if cache is None:
            return new_cache, new_mask, first
        t_old, t_new = mask.shape[1], new_mask.shape[1]
        t = max(t_old, t_new)
        pad = torch.nn.functional.pad
        merged = [[torch.cat([pad(getattr(a, n), (0, 0, t - t_old, 0)), pad(getattr(b, n), (0, 0, t - t_new, 0))])
                   for n in ("keys", "values")] for a, b in zip(cache.layers, new_cache.layers)]
        for layer, (keys, values) in zip(cache.layers, merged):  # all built first: a failure changes nothing
            layer.set(keys, values)
        mask = torch.cat([pad(mask, (t - t_old, 0)), pad(new_mask, (t - t_new, 0))])
        return cache, mask, torch.cat([last, first])

    def _positions(self, mask) -> torch.Tensor:
        return mask.sum(-1)  # the next position of each row: its count of real tokens

    def _step(self, rows, cache, mask, last):
        """One decode step for every row: each row's next token, and the mask grown by one real column."""
        pos = self._positions(mask)
        full = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        greedy = self._timed_forward(cache, input_ids=last[:, None], attention_mask=full, position_ids=pos[:, None])
        return [[g[-1]] for g in greedy], full

    def _timed_forward(self, cache, **inputs):
        """A forward pass and its greedy tokens, timed (the tolist waits for the device)."""
        start = time.perf_counter()
        out = self._forward(cache, **inputs)
        greedy = out.logits.argmax(-1).tolist()
        n = inputs["input_ids"].numel()
        self._passes.append((n, time.perf_counter() - start))
        del self._passes[:-64]
        return greedy

    def _pass_cost(self) -> tuple[float, float]:
        """Seconds per forward pass as ``a + b × tokens``, fitted on recent passes (a guess until then)."""
        if len(self._passes) < 4:
            return 0.0, 1.0  # no evidence yet: cost proportional to tokens
        n = [p[0] for p in self._passes]
        t = [p[1] for p in self._passes]
        mean_n, mean_t = sum(n) / len(n), sum(t) / len(t)
        var = sum((x - mean_n) ** 2 for x in n)
        if var == 0:
            return mean_t / 2, mean_t / (2 * mean_n)  # one pass size seen: split the cost evenly
        b = max(0.0, sum((x - mean_n) * (y - mean_t) for x, y in zip(n, t)) / var)
        return max(0.0, mean_t - b * mean_n), b

    def _speculate(self, rows, cache, mask, last, stats, cap):
        """Draft per row, verify all drafts in one pass, keep each row's longest matching prefix.

        The draft width is chosen each step for the most tokens per second, from the measured
        cost of a pass (fixed part plus a part per token) and the drafts' acceptance so far: on
        text that does not copy, or where wide passes cost as much as they gain, it falls to a
        plain step.
        """
        k = self.draft_tokens
        drafts, tiers = [], []
        for row in rows:
            room = cap[row.index] - len(row.out) - 1  # the verified pass adds one token of its own
            d, n = row.draft(min(k, room)) if room > 0 else ([], 0)
            drafts.append(d)
            tiers.append(n)
        most = max((len(d) for d in drafts), default=0)
        if most and self.adaptive:
            a, b = self._pass_cost()
            rate = {n: (acc + 1) / (prop + 2) for n, (acc, prop) in self._tier_stats.items()}
            best_w, best = 0, len(rows) / (a + b * len(rows))
            for w in range(1, most + 1):
                expected = sum(rate.get(n, 0.5) * min(len(d), w) for d, n in zip(drafts, tiers))
                gain = (len(rows) + expected) / (a + b * len(rows) * (w + 1))
                if gain > best:
                    best_w, best = w, gain
            most = best_w
            drafts = [d[:most] for d in drafts]
            if most:  # the pass is paid for anyway: rows without a draft guess from their last token alone
                for r, row in enumerate(rows):
                    room = cap[row.index] - len(row.out) - 1
                    if not drafts[r] and room > 0:
                        drafts[r], tiers[r] = row.draft(min(most, room), min_ngram=1)
        if most == 0:  # nothing worth verifying: a plain step, no holes
            return self._step(rows, cache, mask, last)
        self._holes = True
        device = self.model.device
        ids = torch.full((len(rows), most + 1), self.pad_token_id, dtype=torch.long)
        ids[:, 0] = last.cpu()
        for r, d in enumerate(drafts):
            if d:
                ids[r, 1:1 + len(d)] = torch.tensor(d)
        ids = ids.to(device)
        pos = self._positions(mask)[:, None] + torch.arange(most + 1, device=device)[None]
        full = torch.cat([mask, torch.ones((len(rows), most + 1), dtype=mask.dtype, device=device)], dim=1)
        greedy = self._timed_forward(cache, input_ids=ids, attention_mask=full, position_ids=pos)
        fresh = []
        t = mask.shape[1]
        for r, (d, g) in enumerate(zip(drafts, greedy)):  # noqa: B007
            accepted = 0
            while accepted < len(d) and d[accepted] == g[accepted]:
                accepted += 1
            stats.draft_tokens_proposed += len(d)
            stats.draft_tokens_accepted += accepted
            if d:
                acc, prop = self._tier_stats.get(tiers[r], (0, 0))
                self._tier_stats[tiers[r]] = (acc + accepted, prop + len(d))
            full[r, t + accepted + 1:] = 0  # the rejected drafts' cache entries: holes, masked out
            fresh.append(g[:accepted + 1])
        return fresh, full

    def _trim(self, cache, mask):
        """Drop cache columns no row uses (a view); compact rows when holes fill over half the cache (a copy)."""
        used = mask.any(0)
        first = int(used.nonzero()[0]) if used.any() else mask.shape[1]
        if first:
            for layer in cache.layers:
                layer.drop_front(first)
            mask = mask[:, first:]
        real = mask.sum(-1)
        width = int(real.max())
        if mask.shape[1] > 2 * width + 8:  # compact: each row's real tokens, right-aligned
            order = torch.sort(mask, dim=1, stable=True).indices[:, -width:]  # real positions last, in order
            index = order[:, None, :, None]
            for layer in cache.layers:
                k, v = layer.keys, layer.values
                layer.set(k.gather(2, index.expand(-1, k.shape[1], -1, k.shape[3])),
                          v.gather(2, index.expand(-1, v.shape[1], -1, v.shape[3])))
            mask = torch.gather(mask, 1, order)
        return cache, mask
