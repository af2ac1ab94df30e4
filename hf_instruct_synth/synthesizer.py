"""``InstructionSynthesizer``: the ``datasets.map`` transform that glues the pieces together.

Where a row goes: ``__call__`` checks each text, builds its prompt (``format.py``),
tokenizes and fits it to the context, hands the prompts to an engine (``engines/``, which
sorts and buckets them with ``batching.py``), decodes, parses pairs (``format.py``) and
returns the two new columns in the rows' original order.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from . import __version__
from .format import (BOS, EOS, MARKERS, PROMPT_HEAD, Pair, build_prompt, format_pairs, is_repetition_loop,
                     parse_pairs_counted)
from .stats import SynthesisStats

DEFAULT_MODEL = "instruction-pretrain/instruction-synthesizer"
OUTPUT_COLUMNS = ("instruction_response_pairs", "synthesizer_output")
from .engines import CPU_MAX_BATCH_TOKENS, default_max_batch_tokens, default_max_prompt_tokens  # noqa: E402,F401


def _output_features():
    from datasets import Features, List, Value

    pair = {"instruction": Value("string"), "response": Value("string")}
    return Features({"instruction_response_pairs": List(pair), "synthesizer_output": Value("string")})


def __getattr__(name: str):
    if name == "OUTPUT_FEATURES":  # built on first use: importing this module imports no datasets
        return _output_features()
    raise AttributeError(name)


@dataclass(frozen=True)
class GenerationSettings:
    """Everything besides the model that decides what the synthesizer writes: one definition behind
    :meth:`InstructionSynthesizer.settings` (the card), :meth:`~InstructionSynthesizer.fingerprint`
    (the ``datasets`` cache and the run's job record).

    Example:
        >>> InstructionSynthesizer(max_new_tokens=300).generation_settings().max_new_tokens
        300
    """

    text_column: str
    max_new_tokens: int
    max_model_len: int
    dedupe: bool
    on_overflow: str
    on_invalid: str
    dtype: str | None
    attn_implementation: str | None
    speculative: str | None
    draft_tokens: int
    ngram: int

    def card(self) -> dict[str, Any]:
        """The fields a dataset card shows, in words."""
        return {"decoding": "greedy", "max_new_tokens": self.max_new_tokens, "max_model_len": self.max_model_len,
                "dedupe_questions": self.dedupe, "on_overflow": self.on_overflow, "on_invalid": self.on_invalid,
                "speculative": (f"{self.speculative} ({self.draft_tokens} draft tokens, n-grams up to {self.ngram})"
                                if self.speculative else "off")}

    def identity(self) -> dict[str, Any]:
        """The fields that decide the outputs (drafting choices only when drafting is on)."""
        d = asdict(self)
        if not self.speculative:
            d.pop("draft_tokens")
            d.pop("ngram")
        return d


class PairsColumn(list):
    """The pairs column: a plain list that tells Arrow its type.

    Without it a batch whose rows all have no pair is typed ``list<null>`` by ``datasets``,
    and the next batch with pairs fails to cast.
    """

    def __arrow_array__(self, type=None):  # noqa: A002 - the pyarrow protocol's name
        import pyarrow as pa

        pair = pa.struct([("instruction", pa.string()), ("response", pa.string())])
        return pa.array(list(self), type=type or pa.list_(pair))


class InstructionSynthesizer:
    """Synthesize instruction-response pairs for a text column, as a batched ``ds.map`` transform.

    Adds ``instruction_response_pairs`` (list of ``{"instruction", "response"}``) and
    ``synthesizer_output`` (the raw generated text, special tokens removed) to every row,
    in the rows' original order. Prompts are sorted by length and generated greedily in
    sub-batches cut by a token budget, so little compute goes to padding.

    Args:
        model: a Hub id, a local folder, or a loaded ``PreTrainedModel``. Loaded lazily on
            the first call, so the object pickles small for ``num_proc`` workers.
        tokenizer: a Hub id, folder or loaded tokenizer; default: the model's.
        text_column: the column holding the raw texts.
        max_new_tokens: tokens generated per text at most (400 in the published setup).
        max_model_len: context length; prompts longer than ``max_model_len -
            max_new_tokens`` are truncated at the text's end (``on_overflow="truncate"``)
            or raise (``on_overflow="error"``).
        max_batch_tokens: token budget of one sub-batch, ``rows × (longest prompt +
            max_new_tokens)``; default: sized from free GPU memory, 8192 on CPU.
        max_pad_fraction: a sub-batch is also cut where its left padding would exceed this
            share of its prompt positions (``None``: cut by the budget alone).
        revision: the model's Hub revision (a branch, tag or commit).
        device, dtype, attn_implementation: forced placement; default: ``cuda:{rank}`` with
            bf16 and ``flash_attention_2`` (when ``flash_attn`` imports, else ``sdpa``) on a
            GPU, float32 and ``sdpa`` on CPU.
        dedupe: drop questions equal, case-insensitively, to an earlier one in the row.
        on_invalid: ``"error"`` (default) raises on a ``None`` or non-string text naming
            the row; ``"skip"`` gives that row empty outputs and counts it.
        speculative: ``"prompt_lookup"`` drafts the next tokens from the row's own prompt
            and output and verifies them in one pass (engines ``native`` and ``vllm``);
            ``draft_tokens`` drafted at most per step, from n-grams of up to ``ngram`` tokens.
        engine: generation back end: ``"native"`` (our own loop: continuous batching, rows
            leave at EOS and waiting prompts join; speculation), ``"static"`` (length-sorted batches), ``"continuous"``
            (transformers' continuous batching), ``"vllm"`` (vLLM, extra ``vllm``; the model
            must be a Hub id or folder), or ``"auto"`` (vLLM when it imports and the model is
            given by name, else native: the fastest measured, benchmarks/RESULTS.md), or an
            ``Engine`` instance of your own: an object with ``name`` and ``generate(prompts,
            stats)`` (and optionally ``tokenizer``), e.g. :class:`hf_instruct_synth.testing.ScriptedEngine`.

    Example:
        >>> from datasets import Dataset
        >>> from hf_instruct_synth import DEMO_MODEL, InstructionSynthesizer
        >>> ds = Dataset.from_dict({"text": ["Ada Lovelace wrote the first program in 1843."]})
        >>> synth = InstructionSynthesizer(model=DEMO_MODEL, max_new_tokens=64)
        >>> ds = ds.map(synth, batched=True)  # doctest: +SKIP
        >>> ds[0]["instruction_response_pairs"]  # doctest: +SKIP
        [{'instruction': 'When did Ada Lovelace write the first program?', 'response': '1843'}]
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        tokenizer: Any = None,
        *,
        text_column: str = "text",
        max_new_tokens: int = 400,
        max_model_len: int = 4096,
        max_batch_tokens: int | None = None,
        max_pad_fraction: float | None = 0.1,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        dedupe: bool = True,
        on_overflow: Literal["truncate", "error"] = "truncate",
        on_invalid: Literal["error", "skip"] = "error",
        engine: Any = "auto",
        speculative: Literal["prompt_lookup"] | None = None,
        draft_tokens: int = 4,
        ngram: int = 3,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if max_model_len <= max_new_tokens:
            raise ValueError(
                f"max_model_len ({max_model_len}) must exceed max_new_tokens ({max_new_tokens}): "
                "the prompt needs room too"
            )
        if on_overflow not in ("truncate", "error"):
            raise ValueError(f"on_overflow must be 'truncate' or 'error', got {on_overflow!r}")
        if on_invalid not in ("error", "skip"):
            raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
        from .engines import ENGINES

        if isinstance(engine, str) and engine not in ENGINES + ("auto",):
            raise ValueError(f"engine must be one of {ENGINES + ('auto',)} or an Engine instance, got {engine!r}")
        if not isinstance(engine, str) and not callable(getattr(engine, "generate", None)):
            raise ValueError(f"engine must be a name or an object with generate(prompts, stats), got {engine!r}")
        from .engines import SPECULATIVE_ENGINES

        if speculative not in (None, "prompt_lookup"):
            raise ValueError(f"speculative must be None or 'prompt_lookup', got {speculative!r}")
        if speculative and isinstance(engine, str) and engine not in SPECULATIVE_ENGINES + ("auto",):
            raise ValueError(f"speculative='prompt_lookup' needs engine='native' or 'vllm' (or 'auto'), not {engine!r}")
        if draft_tokens < 1 or ngram < 2:
            raise ValueError(f"need draft_tokens >= 1 and ngram >= 2, got {draft_tokens} and {ngram}")
        if max_batch_tokens is not None and max_batch_tokens <= 0:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.text_column = text_column
        self.max_new_tokens = max_new_tokens
        self.max_model_len = max_model_len
        self.max_batch_tokens = max_batch_tokens
        self.max_pad_fraction = max_pad_fraction
        self.revision = revision
        self.device = device
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.dedupe = dedupe
        self.on_overflow = on_overflow
        self.on_invalid = on_invalid
        self.engine = engine
        self.speculative = speculative
        self.draft_tokens = draft_tokens
        self.ngram = ngram
        self.stats = SynthesisStats()
        self.model_commit: str | None = None  # the Hub commit loaded, once pinned (pin_revision)
        self.placement: dict[str, Any] = {}  # where this process loaded: rank, pinned GPU, device, attention
        self._fingerprint: str | None = None
        self._loaded: dict[str, Any] | None = None  # model, tokenizer, engine, once loaded

    # ------------------------------------------------------------------ datasets.map entry
    def __call__(self, batch: Mapping[str, list], rank: int | None = None, *more: Any) -> dict[str, list]:
        """Transform one batch; ``ds.map`` calls this with ``batched=True``.

        ``rank`` comes from ``with_rank=True`` and picks the GPU (``cuda:{rank % n}``).
        With ``with_indices=True`` too, ``datasets`` passes ``(batch, indices, rank)``:
        the indices then name rows in error messages.

        Example:
            >>> synth({"text": ["Some text."]})  # doctest: +SKIP
            {'instruction_response_pairs': [[...]], 'synthesizer_output': ['<QUE> …']}
        """
        indices: list[int] | None = None
        if isinstance(rank, list):  # with_indices=True (and maybe with_rank=True)
            indices, rank = rank, (more[0] if more else None)
        start = time.perf_counter()
        texts = self.texts_of(batch)
        todo = self.check_rows(texts, indices)
        outputs = [""] * len(texts)
        pairs: list[list[Pair]] = [[] for _ in texts]
        if todo:
            self._load(rank)
            prompts = self._prompt_ids([texts[i] for i in todo], [self._row_name(i, indices) for i in todo])
            for i, text_out, row_pairs in zip(todo, *self.generate_prompts(prompts)):
                outputs[i], pairs[i] = text_out, row_pairs
        self.count_rows(pairs, generated=len(todo))
        self.stats.wall_time_s += time.perf_counter() - start
        return {"instruction_response_pairs": PairsColumn(pairs), "synthesizer_output": outputs}

    # ------------------------------------------------------------------ the phases, public for rounds.py
    def check_rows(self, texts: list, indices: list[int] | None) -> list[int]:
        """Phase 1: indices of rows to generate for; invalid rows raise or are skipped, empty ones counted."""
        from .inputs import text_problem

        todo = []
        for i, text in enumerate(texts):
            problem = text_problem(text)
            if problem is not None:
                if self.on_invalid == "skip":
                    self.stats.rows_skipped += 1
                    continue
                raise ValueError(
                    f"{self._row_name(i, indices)}: column {self.text_column!r} holds {problem}. Clean the data, "
                    "or pass on_invalid='skip' (CLI: --on-invalid skip) to give such rows empty outputs (they are "
                    "counted in stats.rows_skipped)."
                )
            if any(m in text for m in MARKERS):
                self.stats.rows_with_markers += 1
            if not text.strip():
                self.stats.rows_empty += 1
                continue
            todo.append(i)
        return todo

    def generate_prompts(self, prompts: list[list[int]]) -> tuple[list[str], list[list[Pair]]]:
        """Phase 3 (after :meth:`fit_prompt` / :meth:`encode_prompt`): generate for token-id prompts; return
        decoded outputs and their parsed pairs (repetition loops dropped), in order."""
        loaded = self._load()
        generated = loaded["engine"].generate(prompts, self.stats)
        decoded = loaded["tokenizer"].batch_decode(generated, skip_special_tokens=True)
        parsed = []
        for text_out in decoded:
            row_pairs, dups = parse_pairs_counted(text_out, self.dedupe)
            self.stats.duplicate_questions += dups
            kept = [p for p in row_pairs if not (is_repetition_loop(p["response"])
                                                  or is_repetition_loop(p["instruction"]))]
            self.stats.repetition_loops += len(row_pairs) - len(kept)  # a model stuck in a loop: dropped
            parsed.append(kept)
        return decoded, parsed

    def count_rows(self, pairs: list[list[Pair]], generated: int) -> None:
        """Phase 4: add the rows' pair counts to :attr:`stats`."""
        for row_pairs in pairs:
            self.stats.pairs += len(row_pairs)
            self.stats.rows_without_pairs += not row_pairs
            key = str(len(row_pairs))
            self.stats.pairs_per_row[key] = self.stats.pairs_per_row.get(key, 0) + 1
        self.stats.rows += len(pairs)
        self.stats.rows_generated += generated

    def texts_of(self, batch: Mapping[str, list]) -> list:
        """The batch's text column, or an error naming the columns present."""
        try:
            return list(batch[self.text_column])
        except KeyError:
            present = list(batch.keys())
            raise ValueError(
                f"the batch has no column {self.text_column!r}; columns present: {present}. "
                f"Pass text_column=<name> to InstructionSynthesizer (CLI: --text-column)."
            ) from None

    @staticmethod
    def _row_name(i: int, indices: list[int] | None) -> str:
        if indices is not None:
            return f"row {indices[i]}"
        return f"row {i} of the batch (pass with_indices=True to ds.map for dataset row numbers)"

    # ------------------------------------------------------------------ prompts
    def _prompt_ids(self, texts: list[str], row_names: list[str]) -> list[list[int]]:
        """Prompt token ids for ``texts``, tokenized in one call; over-long prompts truncated (:meth:`_fit`)."""
        encoded = self._encode_many([build_prompt(t) for t in texts])
        return [self.fit_prompt(t, name, ids, offs) for t, name, (ids, offs) in zip(texts, row_names, encoded)]

    def fit_prompt(self, text: str, row_name: str, ids: list[int] | None = None,
             offsets: list[tuple[int, int]] | None = None) -> list[int]:
        """Token ids of the prompt for ``text``, truncated at the text's end to fit the context."""
        encode = self._encode
        limit = self.max_model_len - self.max_new_tokens
        if ids is None:
            ids, offsets = encode(build_prompt(text))
        if len(ids) <= limit:
            return ids
        if self.on_overflow == "error":
            raise ValueError(
                f"{row_name}: the prompt has {len(ids)} tokens, more than max_model_len - max_new_tokens "
                f"= {limit}. Raise max_model_len, shorten the text, or use on_overflow='truncate'."
            )
        head, cut = len(PROMPT_HEAD), len(text)
        while len(ids) > limit:
            over = len(ids) - limit
            if offsets is not None:
                # tokens from the first one reaching past the text belong to the closing tail
                tail = next((j for j, (_, end) in enumerate(offsets) if end > head + cut), len(ids))
                first_dropped = tail - over
                new_cut = offsets[first_dropped][0] - head if first_dropped > 0 else 0
            else:
                new_cut = cut - max(1, over * cut // len(ids))
            cut = max(0, min(new_cut, cut - 1))
            ids, offsets = encode(build_prompt(text[:cut]))
            if cut == 0 and len(ids) > limit:
                raise ValueError(
                    f"max_model_len - max_new_tokens = {limit} tokens cannot hold even an empty prompt "
                    f"({len(ids)} tokens); raise max_model_len or lower max_new_tokens."
                )
        self.stats.rows_truncated += 1
        return ids

    def encode_prompt(self, text: str, history: list[tuple[str, list[Pair]]] = ()) -> list[int]:
        """Token ids of the prompt for ``text`` after the cooked ``history`` links (M-shot rounds).

        Each history link is its prompt, its pairs in tag format and ``</s>``, exactly as
        the reference scripts build it; the wire format's ``<s>`` and ``</s>`` are the only
        control tokens, and everything a text or an answer holds stays plain characters.

        Example:
            >>> synth.encode_prompt("Rome.", history=[("Ada.", [{"instruction": "Who?", "response": "Ada"}])])  # doctest: +SKIP
            [1, …, 2, 1, …]
        """
        tok = self._load()["tokenizer"]
        bos, eos = self._control_id(BOS), self._control_id(EOS)
        segments = [build_prompt(t)[len(BOS):] + format_pairs(p) for t, p in history] + [build_prompt(text)[len(BOS):]]
        encoded = tok(segments, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        ids: list[int] = []
        for k, seg in enumerate(encoded):
            ids += [bos, *seg] + ([eos] if k < len(history) else [])
        return ids

    def _control_id(self, token: str) -> int:
        tok = self._load()["tokenizer"]
        known = {BOS: tok.bos_token_id, EOS: tok.eos_token_id}.get(token)
        return known if known is not None else tok.convert_tokens_to_ids(token)

    def _encode(self, prompt: str) -> tuple[list[int], list[tuple[int, int]] | None]:
        return self._encode_many([prompt])[0]

    def _encode_many(self, prompts: list[str]) -> list[tuple[list[int], list[tuple[int, int]] | None]]:
        """Token ids and, for fast tokenizers, character offsets of prompts that start with ``<s>``.

        The leading ``<s>`` becomes the one BOS id; everything after it is tokenized with
        special tokens split, so a ``</s>``, ``<pad>`` or ``<s>`` inside a text stays plain
        characters and never becomes a control token.
        """
        tok = self._load()["tokenizer"]
        fast = getattr(tok, "is_fast", False)
        bos = self._control_id(BOS)
        rests = [p[len(BOS):] if p.startswith(BOS) else p for p in prompts]
        enc = tok(rests, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=fast)
        out = []
        for prompt, ids, offs in zip(prompts, enc["input_ids"], enc["offset_mapping"] if fast else [None] * len(rests)):
            if prompt.startswith(BOS):
                ids = [bos, *ids]
                offs = [(0, len(BOS)), *((a + len(BOS), b + len(BOS)) for a, b in offs)] if offs is not None else None
            out.append((list(ids), list(offs) if offs is not None else None))
        return out

    # ------------------------------------------------------------------ loading
    def load(self, rank: int | None = None) -> None:
        """Load the model, tokenizer and engine now (else on the first call); ``rank`` picks the GPU.

        Example:
            >>> synth = InstructionSynthesizer(model=DEMO_MODEL); synth.load(); synth.is_loaded  # doctest: +SKIP
            True
        """
        self._load(rank)

    def resolve_commit(self) -> str | None:
        """The Hub commit the model name and revision stand for now (``None`` for a folder or object).

        Example:
            >>> InstructionSynthesizer(model="org/name", revision="0" * 40).resolve_commit()
            '0000000000000000000000000000000000000000'
        """
        from .loading import resolve_commit

        if not isinstance(self.engine, str):  # the engine holds its own model
            return None
        return self.model_commit or resolve_commit(self.model, self.revision)

    def pin_revision(self, commit: str | None) -> None:
        """Load exactly this Hub commit (a resumed run's), whatever the revision name points to now.

        The fingerprint stays that of the requested revision, so a resume is recognised.
        """
        if commit and self._loaded is None:
            self.model_commit = commit

    def _load(self, rank: int | None = None) -> dict[str, Any]:
        if self._loaded is not None:
            return self._loaded
        from .loading import (eos_token_ids, generation_config_eos, load_model_and_tokenizer, load_tokenizer,
                              resolve_placement)
        from .engines import build_engine
        from .loading import pin_worker_to_gpu

        engine_name = self.resolved_engine()
        revision = self.model_commit or self.revision
        # a worker of rank r sees only its own GPU, before any CUDA call: then vLLM and transformers'
        # continuous batching size themselves from that GPU, and our placement is cuda:0
        pinned = pin_worker_to_gpu(rank) if self.device is None and isinstance(self.engine, str) else None
        self.placement = {"rank": rank, "gpu": pinned, "device": None}
        if not isinstance(self.engine, str):  # an Engine the caller built: it holds its model
            tokenizer = getattr(self.engine, "tokenizer", None) or load_tokenizer(self.model, self.tokenizer,
                                                                                 revision=revision)
            self._loaded = {"model": getattr(self.engine, "model", None), "tokenizer": tokenizer,
                            "engine": self.engine}
            return self._loaded
        if engine_name == "vllm":  # vLLM loads the weights itself; we keep only the tokenizer
            model, tokenizer = None, load_tokenizer(self.model, self.tokenizer, revision=revision)
            eos = eos_token_ids(tokenizer, generation_config_eos(self.model, revision))
        else:
            device, dtype, attn = resolve_placement(self.device, self.dtype, self.attn_implementation,
                                                    0 if pinned is not None else rank)
            model, tokenizer = load_model_and_tokenizer(self.model, self.tokenizer, revision=revision,
                                                        device=device, dtype=dtype, attn_implementation=attn)
            # the dtype it runs in: a model object passed in keeps the one its caller built it with
            self.placement.update(device=device, attn_implementation=attn,
                                  dtype=str(model.dtype).removeprefix("torch."))
            eos = eos_token_ids(tokenizer, getattr(getattr(model, "generation_config", None), "eos_token_id", None))
        engine = build_engine(engine_name, model=model, model_id=self.model, revision=revision,
                              tokenizer_id=self.tokenizer if isinstance(self.tokenizer, str) else None,
                              eos_token_ids=eos, pad_token_id=tokenizer.pad_token_id,
                              max_new_tokens=self.max_new_tokens, max_model_len=self.max_model_len,
                              dtype=self.dtype, max_batch_tokens=self.max_batch_tokens,
                              max_pad_fraction=self.max_pad_fraction, speculative=self.speculative,
                              draft_tokens=self.draft_tokens, ngram=self.ngram)
        self._loaded = {"model": model, "tokenizer": tokenizer, "engine": engine}
        return self._loaded

    def resolved_engine(self) -> str:
        """The engine this synthesizer runs: its ``engine``, with ``"auto"`` resolved by
        :func:`hf_instruct_synth.engines.resolve_engine`."""
        if not isinstance(self.engine, str):
            return getattr(self.engine, "name", type(self.engine).__name__)
        from .engines import resolve_engine

        return resolve_engine(self.engine, self.model)

    def settings(self) -> dict[str, Any]:
        """What the card records of how the data was made.

        Example:
            >>> InstructionSynthesizer(max_new_tokens=300).settings()["max_new_tokens"]
            300
        """
        from . import DEMO_MODEL

        from .loading import identity

        model = self.model if isinstance(self.model, (str, os.PathLike)) else getattr(self.model, "name_or_path", "")
        if str(model) == DEMO_MODEL:
            model = "hf-instruct-synth demo synthesizer (a tiny demonstration model)"
        elif model and os.path.isdir(model):  # a local folder: its name and content digest, never its path
            model = f"{os.path.basename(os.path.normpath(model))} (local folder, digest {identity(model)[4:]})"
        return {"model": str(model), "model_revision": self.model_commit or self.revision or "main",
                **self.generation_settings().card(),
                "engine": self.resolved_engine() if not isinstance(self.engine, str) else self.engine,
                "hf_instruct_synth": __version__}

    def generation_settings(self) -> GenerationSettings:
        """The generation parameters as one frozen record (see :class:`GenerationSettings`)."""
        return GenerationSettings(self.text_column, self.max_new_tokens, self.max_model_len, self.dedupe,
                                  self.on_overflow, self.on_invalid, self.dtype, self.attn_implementation,
                                  self.speculative, self.draft_tokens, self.ngram)

    @property
    def is_loaded(self) -> bool:
        """Whether the model has been loaded in this process (it loads on the first call)."""
        return self._loaded is not None

    # ------------------------------------------------------------------ pickling & caching
    def __getstate__(self) -> dict[str, Any]:
        # What we loaded ourselves is dropped (workers reload it); objects the user passed stay.
        state = self.__dict__.copy()
        state["_loaded"] = None
        return state

    def fingerprint(self) -> str:
        """A cheap, stable hash of what determines the outputs; ``datasets`` caches on it.

        It covers the model (Hub id and revision, a content digest of a local folder, or a
        sample of a loaded model's weights), the tokenizer, the generation parameters and
        the package version; not the weights in full, which would take minutes for 7B.
        """
        if self._fingerprint is None:
            from .loading import identity

            parts = {
                "class": "InstructionSynthesizer",
                "version": __version__,
                "model": identity(self.model, self.revision),
                "tokenizer": identity(self.tokenizer, self.revision) if self.tokenizer is not None else None,
                "settings": self.generation_settings().identity(),
                "engine": None if isinstance(self.engine, str) else
                getattr(self.engine, "fingerprint", lambda: type(self.engine).__qualname__)(),
            }
            self._fingerprint = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
        return self._fingerprint

    def __repr__(self) -> str:
        name = self.model if isinstance(self.model, (str, os.PathLike)) else type(self.model).__name__
        return (f"InstructionSynthesizer(model={str(name)!r}, max_new_tokens={self.max_new_tokens}, "
                f"max_model_len={self.max_model_len}, engine={self.resolved_engine()!r})")


def _register_datasets_hasher() -> None:
    """Make ``datasets`` hash a synthesizer by :meth:`fingerprint`, never by its weights."""
    try:
        from datasets.utils._dill import pklregister
    except ImportError:  # an internal of datasets moved: __getstate__ still keeps hashing small
        return

    @pklregister(InstructionSynthesizer)
    def _save(pickler, obj):  # noqa: ANN001
        pickler.save_reduce(_fingerprint_token, (obj.fingerprint(),), obj=obj)


def _fingerprint_token(fingerprint: str) -> str:
    return fingerprint


_register_datasets_hasher()


#: Ready to use: ``ds.map(synthesize, batched=True)`` with the published synthesizer.
synthesize = InstructionSynthesizer()
