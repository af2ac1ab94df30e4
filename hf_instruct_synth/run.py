"""The main job, one machine: a dataset in, a verified shard folder out; resumable.

A thin driver over :class:`~hf_instruct_synth.shards.ShardStore`, which owns the folder
(plan, lock, atomic verified shards, manifest, resume). Rows are processed in shards of
``shard_rows``, in this process, in several worker processes (one model each,
``cuda:{rank}``), or from a stream cut by row count.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .shards import OutputDirError, ShardStore  # noqa: F401  (OutputDirError: re-exported for callers)
from .stats import SynthesisStats
from .synthesizer import InstructionSynthesizer


#: Engines that keep their own queue of rows; the runner hands them a whole shard per call.
SELF_SCHEDULING = ("native", "vllm", "continuous")


@dataclass
class RunOutcome:
    """What a run did: the whole job's counters, this run's share, and what it found on disk."""

    total: SynthesisStats
    this_run: SynthesisStats
    shards_written: int
    shards_before: int
    complete: bool
    repaired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, store: ShardStore, total: SynthesisStats, before: set[int], expected: int | None) -> RunOutcome:
        """The outcome of a run over ``store``, whose shards ``before`` were finished when it began."""
        finished = store.finished()
        this_run = SynthesisStats()
        for i, info in finished.items():
            if i not in before:
                this_run.merge(SynthesisStats.from_dict(info.stats))
        return cls(total=total, this_run=this_run, shards_written=len(set(finished) - before),
                   shards_before=len(before), complete=expected is None or len(finished) == expected,
                   repaired=list(store.repaired), removed=list(store.removed))


def synthesize_to_dir(dataset, synthesizer: InstructionSynthesizer, output_dir: str | os.PathLike, **kwargs: Any
                      ) -> SynthesisStats:
    """Run ``synthesizer`` over ``dataset`` into ``output_dir``; return the counters merged over shards.

    Takes the arguments of :func:`run_to_dir`, which also says what this run did.

    Example:
        >>> from hf_instruct_synth import DEMO_MODEL, InstructionSynthesizer
        >>> from hf_instruct_synth.inputs import load_input
        >>> stats = synthesize_to_dir(load_input("examples/data/paragraphs.jsonl"),
        ...                           InstructionSynthesizer(model=DEMO_MODEL), "out/")  # doctest: +SKIP
    """
    return run_to_dir(dataset, synthesizer, output_dir, **kwargs).total


def run_to_dir(dataset, synthesizer: InstructionSynthesizer, output_dir: str | os.PathLike, *,
               split: str = "train", shard_rows: int = 10_000, batch_size: int = 256, overwrite: bool = False,
               progress: bool = True, rounds: int = 1, seed: int = 0, num_workers: int = 1,
               source: str | None = None, input_paths: tuple[str, ...] = (), about: dict | None = None,
               templify: bool = True, history_budget: str = "tokens",
               log: Callable[[str], None] | None = None) -> RunOutcome:
    """Run the job into ``output_dir`` and report what this run did.

    ``dataset`` is a ``Dataset`` or an ``IterableDataset`` (streamed; then pass ``source``,
    a stable name of the input, for resuming). ``source`` also replaces the dataset's
    fingerprint as the input's identity when given (the CLI passes a content digest of
    local files). ``num_workers`` > 1 spreads shards over that many processes, worker
    ``r`` on ``cuda:{r}``. With ``rounds`` > 1 each shard's rows are chained M-shot
    (:mod:`~hf_instruct_synth.rounds`; ``history_budget`` ``"tokens"`` or the reference's
    ``"words"``). With ``templify`` (default) every row also gets ``augmented_texts``, its
    pre-training text(s) with the pairs templified, and ``template_modes``. ``input_paths``: local files the run reads (an
    output folder holding one is refused). ``about`` is recorded in the manifest for the
    card and for reproducing the run (default: the synthesizer's settings). ``log`` receives one line per notable event
    (damaged shards found, files removed); default: standard error.

    Example:
        >>> outcome = run_to_dir(ds, synth, "out/", shard_rows=1000)  # doctest: +SKIP
        >>> outcome.shards_written, outcome.total.rows  # doctest: +SKIP
        (3, 3000)
    """
    from datasets import IterableDataset
    from tqdm.auto import tqdm

    check_positive(shard_rows=shard_rows, batch_size=batch_size, rounds=rounds, num_workers=num_workers)
    log = log or (lambda line: print(line, file=sys.stderr))
    streaming = isinstance(dataset, IterableDataset)
    if streaming and source is None:
        raise ValueError("a streamed dataset has no fingerprint: pass source=<a stable name of the input>")
    total_rows = None if streaming else len(dataset)
    job = job_record(synthesizer, source or dataset._fingerprint, split=split, shard_rows=shard_rows,
                     rows=total_rows, rounds=rounds, seed=seed, templify=templify, history_budget=history_budget)
    features = None if streaming and dataset.features is None else output_features(dataset.features, synthesizer,
                                                                                    rounds, templify)
    store = ShardStore(output_dir, job, split=split, input_paths=input_paths,
                       schema=features.arrow_schema if features is not None else None,
                       about=about or {"generation": synthesizer.settings()})
    with store.open(overwrite=overwrite):
        if store.removed:
            shards = sum(r.endswith(".parquet") for r in store.removed)
            log(f"overwrite: removed the earlier run's {len(store.removed)} files ({shards} shards, their "
                f"sidecars, manifest, stats) from {output_dir}")
        synthesizer.pin_revision(store.job.get("model_commit"))
        before = set(store.verify(shard_rows, total_rows))
        for line in store.repaired:
            log(line)
        work = ShardWriter(synthesizer, store, batch_size, rounds, seed, templify, history_budget)
        bar = tqdm(total=total_rows, unit="row", desc="Synthesizing", disable=not progress, dynamic_ncols=True)
        bar.update(sum(s.stop - s.start for i, s in store.finished().items()))
        if streaming:
            _run_stream(dataset, shard_rows, before, work, bar)
        else:
            todo = store.todo(total_rows, shard_rows, before)
            if num_workers > 1 and len(todo) > 1:
                _run_parallel(dataset, todo, num_workers, work, bar)
            elif todo:
                synthesizer.load()  # fail on a bad model before the first shard, not inside it
                for index, start, stop in todo:
                    work.write(dataset.select(range(start, stop)), index, start)
                    bar.update(stop - start)
        bar.close()
        expected = None if streaming else len(range(0, total_rows, shard_rows))
        total = store.finalize(expected_shards=expected, about={"hardware": hardware()})
        return RunOutcome.of(store, total, before, expected)


def hardware() -> str:
    """What the run ran on, for the card: the GPU model when one was used, else ``CPU``."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return "CPU"


def check_positive(**values: int | None) -> None:
    """Raise a ``ValueError`` naming the first argument below 1.

    Example:
        >>> check_positive(shard_rows=0)
        Traceback (most recent call last):
        ...
        ValueError: shard_rows must be at least 1, got 0
    """
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def job_record(synthesizer: InstructionSynthesizer, input_id: str | None, *, split: str, shard_rows: int,
               rows: int | None, rounds: int, seed: int, templify: bool = True,
               history_budget: str = "tokens") -> dict:
    """What identifies a job: a re-run with the same record resumes, another one is refused.

    ``model_commit`` (the Hub commit the model name resolved to) is recorded too, but
    only on the first run: a resume loads that commit, whatever ``main`` points to then.
    """
    return {
        "package_version": __version__,
        "input": input_id,
        "synthesizer": synthesizer.fingerprint(),
        "model_commit": synthesizer.resolve_commit(),
        "text_column": synthesizer.text_column,
        "split": split,
        "shard_rows": shard_rows,
        "rows": rows,
        "rounds": rounds,
        "templify": templify,
        "templify_seed": seed if templify else None,
        "history_budget": history_budget if rounds > 1 else None,
    }


def output_features(input_features, synthesizer: InstructionSynthesizer, rounds: int, templify: bool = True):
    """The ``datasets.Features`` of every shard: the input's columns and ours (or the chains' with rounds)."""
    from datasets import Features, List, Value

    from .rounds import chain_features
    from .synthesizer import OUTPUT_FEATURES

    if rounds > 1:
        return chain_features(templify)
    features = dict(input_features or {})
    text = features.get(synthesizer.text_column)
    if text is not None and getattr(text, "dtype", None) not in ("string", "large_string"):
        features[synthesizer.text_column] = OUTPUT_FEATURES["synthesizer_output"]  # decoded to strings by us
    ours = dict(OUTPUT_FEATURES)
    if templify:
        ours.update(augmented_texts=List(Value("string")), template_modes=List(Value("string")))
    return Features({**features, **ours})


@dataclass
class ShardWriter:
    """Writes shards: the transform, the store and the job's parameters (pickled to workers and actors)."""

    synthesizer: InstructionSynthesizer
    store: ShardStore
    batch_size: int
    rounds: int
    seed: int
    templify: bool = True
    history_budget: str = "tokens"
    worker: int = 0

    def write(self, rows, index: int, start: int) -> None:
        """Synthesize one shard (a ``Dataset``) and hand its table to the store."""
        import pyarrow as pa

        synth = self.synthesizer
        before = SynthesisStats().merge(synth.stats)
        if self.rounds > 1:
            from .rounds import synthesize_rounds

            table = synthesize_rounds(rows, synth, self.rounds, seed=self.seed, row_offset=start,
                                      templify=self.templify, history_budget=self.history_budget).data.table
        else:
            from .inputs import as_text

            col, tables = synth.text_column, []
            # engines that schedule rows themselves (rows leave and join as they finish) get the whole shard
            # at once: a batch boundary would run their batch dry at its tail
            step = len(rows) if synth.resolved_engine() in SELF_SCHEDULING else self.batch_size
            for offset in range(0, len(rows), max(1, step)):
                part = rows.select(range(offset, min(offset + step, len(rows))))
                table = part.with_format("arrow")[:]
                # the python view decodes what Arrow stores (a Json-typed column holds JSON text)
                batch = part.select_columns([col])[:] if col in part.column_names else {}
                result = synth(batch, list(range(start + offset, start + offset + len(part))))
                if col in table.column_names:  # the texts as strings; a bad row's value becomes null
                    table = table.set_column(table.column_names.index(col), col,
                                             pa.array([as_text(t) for t in batch[col]], pa.string()))
                for name, values in result.items():
                    table = table.append_column(name, pa.array(values))
                if self.templify:
                    from .templify import augment_rows

                    texts = [as_text(t) for t in batch[col]]
                    augmented, modes = augment_rows(texts, result["instruction_response_pairs"], self.seed)
                    table = table.append_column("augmented_texts", pa.array(augmented, pa.list_(pa.string())))
                    table = table.append_column("template_modes", pa.array(modes, pa.list_(pa.string())))
                tables.append(table)
            table = pa.concat_tables(tables, promote_options="permissive")
        self.store.write(index, start, table, _diff(synth.stats, before), input_rows=len(rows), worker=self.worker,
                         placement=synth.placement)


def _run_stream(dataset, shard_rows: int, done: set[int], work: ShardWriter, bar) -> None:
    """Cut the stream into shards by row count; rows of finished shards are read past, not generated."""
    from datasets import Dataset

    prefix = 0
    while prefix in done:
        prefix += 1
    stream = dataset.skip(prefix * shard_rows) if prefix else dataset
    index, buffer, loaded = prefix, [], False

    def flush() -> None:
        nonlocal index, buffer, loaded
        if index not in done:
            if not loaded:
                work.synthesizer.load()
                loaded = True
            work.write(Dataset.from_list(buffer, features=dataset.features), index, index * shard_rows)
            bar.update(len(buffer))
        index, buffer = index + 1, []

    for row in stream:
        buffer.append(row)
        if len(buffer) == shard_rows:
            flush()
    if buffer:
        flush()


def _worker(args: tuple) -> int:
    """One process of a multi-worker run: its own model on ``cuda:{rank}``, its share of shards."""
    dataset, shards, rank, work = args
    work.worker = rank
    work.synthesizer.load(rank)
    for index, start, stop in shards:
        work.write(dataset.select(range(start, stop)), index, start)
    return len(shards)


def _run_parallel(dataset, todo: list, num_workers: int, work: ShardWriter, bar) -> None:
    import multiprocess

    ctx = multiprocess.get_context("spawn")  # CUDA cannot be used in forked processes
    shares = [(dataset, todo[r::num_workers], r, work) for r in range(min(num_workers, len(todo)))]
    seen = set(work.store.finished())
    with ctx.Pool(len(shares)) as pool:
        result = pool.map_async(_worker, shares)
        while not result.ready():
            result.wait(0.5)
            now = work.store.finished()
            bar.update(sum(s.stop - s.start for i, s in now.items() if i not in seen))
            seen |= set(now)
        result.get()  # re-raises a worker's error


def _diff(after: SynthesisStats, before: SynthesisStats) -> SynthesisStats:
    d, b = after.to_dict(), before.to_dict()
    fields_ = {k: (v - b[k] if not isinstance(v, dict) else {kk: vv - b[k].get(kk, 0) for kk, vv in v.items()})
               for k, v in d.items()}
    fields_["pairs_per_row"] = {k: v for k, v in fields_["pairs_per_row"].items() if v}
    return SynthesisStats.from_dict(fields_)


def output_dir_for(repo_id: str) -> Path:
    """Where ``--push-to-hub REPO`` without ``--output`` writes its shards.

    Example:
        >>> str(output_dir_for("user/corpus-aug"))
        '.hf-instruct-synth/user__corpus-aug'
    """
    return Path(".hf-instruct-synth") / repo_id.replace("/", "__")
