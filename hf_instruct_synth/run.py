"""The main job: a dataset in, parquet shards and ``stats.json`` out; resumable.

Rows are processed in shards of ``shard_rows``. Each finished shard is written atomically
(temporary file, then rename) as ``DIR/data/{split}-{index:05d}.parquet``, followed by its
sidecar ``.json`` (row range and the transform's counters): a shard is done when its
sidecar exists. ``DIR/manifest.json`` records the job (input fingerprint, parameters);
re-running the same job continues with the missing shards, a job with other input or
parameters is refused unless ``overwrite``. Shards can be spread over several worker
processes (one model each, ``cuda:{rank}``), and a streamed ``IterableDataset`` is cut
into shards by row count.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from . import __version__
from .stats import SynthesisStats
from .synthesizer import InstructionSynthesizer

MANIFEST = "manifest.json"
_JOB_WORDS = {"rounds": "number of rounds", "templify_seed": "seed", "input": "input data",
              "synthesizer": "model or generation parameters", "rows": "row count (--limit)",
              "shard_rows": "shard size", "text_column": "text column", "package_version": "package version"}


class OutputDirError(ValueError):
    """The output folder holds something this job must not overwrite or cannot resume."""


def synthesize_to_dir(dataset, synthesizer: InstructionSynthesizer, output_dir: str | os.PathLike, *,
                      split: str = "train", shard_rows: int = 10_000, batch_size: int = 256,
                      overwrite: bool = False, progress: bool = True, rounds: int = 1, seed: int = 0,
                      num_workers: int = 1, source: str | None = None) -> SynthesisStats:
    """Run ``synthesizer`` over ``dataset`` into ``output_dir``; return the counters merged over shards.

    ``dataset`` is a ``Dataset`` or an ``IterableDataset`` (streamed; then pass ``source``,
    a stable name of the input, for resuming). ``num_workers`` > 1 spreads shards over
    that many processes, worker ``r`` on ``cuda:{r}`` (one per GPU). With ``rounds`` > 1,
    each shard's rows are chained M-shot (:mod:`~hf_instruct_synth.rounds`) and the shard
    holds one row per chain, with templified ``augmented_texts``.

    Example:
        >>> from hf_instruct_synth import DEMO_MODEL, InstructionSynthesizer
        >>> from hf_instruct_synth.inputs import load_input
        >>> stats = synthesize_to_dir(load_input("examples/data/paragraphs.jsonl"),
        ...                           InstructionSynthesizer(model=DEMO_MODEL), "out/")  # doctest: +SKIP
    """
    from datasets import IterableDataset
    from tqdm.auto import tqdm

    out = Path(output_dir)
    streaming = isinstance(dataset, IterableDataset)
    if streaming and source is None:
        raise ValueError("a streamed dataset has no fingerprint: pass source=<a stable name of the input>")
    job = job_record(synthesizer, source if streaming else dataset._fingerprint, split=split,
                     shard_rows=shard_rows, rows=None if streaming else len(dataset), rounds=rounds, seed=seed)
    _prepare(out, job, overwrite)
    work = {"synthesizer": synthesizer, "out": str(out), "split": split, "batch_size": batch_size,
            "rounds": rounds, "seed": seed}
    done = _finished(out, split)
    total_rows = None if streaming else len(dataset)
    bar = tqdm(total=total_rows, unit="row", desc="Synthesizing", disable=not progress, dynamic_ncols=True)
    bar.update(sum(s["stop"] - s["start"] for s in done.values()))
    if streaming:
        _run_stream(dataset, shard_rows, done, work, bar)
    else:
        starts = list(range(0, len(dataset), shard_rows))
        todo = [(i, s, min(s + shard_rows, len(dataset))) for i, s in enumerate(starts) if i not in done]
        if num_workers > 1 and len(todo) > 1:
            _run_parallel(dataset, todo, num_workers, work, out, bar)
        elif todo:
            synthesizer._load()  # fail on a bad model before the first shard, not inside it
            for index, start, stop in todo:
                _write_shard(dataset.select(range(start, stop)), index, start, work)
                bar.update(stop - start)
    bar.close()
    return finalize(out, split, expected_shards=None if streaming else len(range(0, len(dataset), shard_rows)))


def job_record(synthesizer: InstructionSynthesizer, input_id: str | None, *, split: str, shard_rows: int,
               rows: int | None, rounds: int, seed: int) -> dict:
    """What identifies a job: a re-run with the same record resumes, another one is refused."""
    return {
        "package_version": __version__,
        "input": input_id,
        "synthesizer": synthesizer.fingerprint(),
        "text_column": synthesizer.text_column,
        "split": split,
        "shard_rows": shard_rows,
        "rows": rows,
        "rounds": rounds,
        "templify_seed": seed if rounds > 1 else None,
    }


def finalize(out: Path, split: str, expected_shards: int | None) -> SynthesisStats:
    """Merge the finished shards' counters into ``stats.json`` and mark the manifest; return them."""
    finished = _finished(out, split)
    total = SynthesisStats()
    for shard in finished.values():
        total.merge(SynthesisStats.from_dict(shard["stats"]))
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"] = len(finished)
    manifest["complete"] = expected_shards is None or len(finished) == expected_shards
    _write_json(out / MANIFEST, manifest)
    _write_json(out / "stats.json", total.to_dict())
    return total


def _write_shard(rows, index: int, start: int, work: dict) -> None:
    """Synthesize one shard (a ``Dataset``) and write its parquet file, then its sidecar."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    synth: InstructionSynthesizer = work["synthesizer"]
    before = SynthesisStats().merge(synth.stats)
    if work["rounds"] > 1:
        from .rounds import synthesize_rounds

        table = synthesize_rounds(rows, synth, work["rounds"], seed=work["seed"], row_offset=start).data.table
    else:
        tables = []
        for offset in range(0, len(rows), work["batch_size"]):
            span = list(range(offset, min(offset + work["batch_size"], len(rows))))
            table = rows.select(span).with_format("arrow")[:]
            col = synth.text_column
            batch = {col: table.column(col).to_pylist()} if col in table.column_names else table.to_pydict()
            result = synth(batch, [start + i for i in span])  # the indices name rows in error messages
            for name, values in result.items():
                table = table.append_column(name, pa.array(values))
            tables.append(table)
        table = pa.concat_tables(tables)
    out, base = Path(work["out"]), f"data/{work['split']}-{index:05d}"
    tmp = out / f"{base}.parquet.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / f"{base}.parquet")
    _write_json(out / f"{base}.json", {"index": index, "start": start, "stop": start + len(rows),
                                       "file": f"{base}.parquet", "worker": work.get("worker", 0),
                                       "stats": _diff(synth.stats, before).to_dict()})


def _run_stream(dataset, shard_rows: int, done: dict, work: dict, bar) -> None:
    from datasets import Dataset

    prefix = 0
    while prefix in done:  # one worker writes a stream's shards in order: the finished ones are a prefix
        prefix += 1
    skip = prefix * shard_rows
    stream = dataset.skip(skip) if skip else dataset
    index, start, buffer = skip // shard_rows, skip, []
    loaded = False

    def flush():
        nonlocal index, start, buffer
        _write_shard(Dataset.from_list(buffer), index, start, work)
        bar.update(len(buffer))
        index, start, buffer = index + 1, start + len(buffer), []

    for row in stream:
        if not loaded:
            work["synthesizer"]._load()
            loaded = True
        buffer.append(row)
        if len(buffer) == shard_rows:
            flush()
    if buffer:
        flush()


def _worker(args: tuple) -> int:
    """One process of a multi-worker run: its own model on ``cuda:{rank}``, its share of shards."""
    dataset, shards, rank, work = args
    work = {**work, "worker": rank}
    synth: InstructionSynthesizer = work["synthesizer"]
    synth._load(rank)
    for index, start, stop in shards:
        _write_shard(dataset.select(range(start, stop)), index, start, work)
    return len(shards)


def _run_parallel(dataset, todo: list, num_workers: int, work: dict, out: Path, bar) -> None:
    import multiprocess

    ctx = multiprocess.get_context("spawn")  # CUDA cannot be used in forked processes
    shares = [(dataset, todo[r::num_workers], r, work) for r in range(min(num_workers, len(todo)))]
    seen = set(_finished(out, work["split"]))
    with ctx.Pool(len(shares)) as pool:
        result = pool.map_async(_worker, shares)
        while not result.ready():
            result.wait(0.5)
            now = _finished(out, work["split"])
            bar.update(sum(s["stop"] - s["start"] for i, s in now.items() if i not in seen))
            seen |= set(now)
        result.get()  # re-raises a worker's error


def _finished(out: Path, split: str) -> dict[int, dict]:
    found = {}
    for f in sorted((out / "data").glob(f"{split}-*.json")):
        shard = json.loads(f.read_text())
        if (out / shard["file"]).exists():
            found[shard["index"]] = shard
    return found


def _prepare(out: Path, job: dict, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not (out / MANIFEST).exists():
            raise OutputDirError(f"{out} is not empty and holds no {MANIFEST} of an earlier run; "
                                 "pick an empty folder or pass --overwrite")
        else:
            manifest = json.loads((out / MANIFEST).read_text())
            changed = [_JOB_WORDS.get(k, k) for k, v in job.items() if manifest.get("job", {}).get(k) != v]
            if changed:
                raise OutputDirError(f"{out} holds a run with a different {', '.join(changed)}; re-run the same "
                                     "command to resume it, or pass --overwrite to start over")
            return
    (out / "data").mkdir(parents=True, exist_ok=True)
    _write_json(out / MANIFEST, {"job": job, "shards": 0, "complete": False,
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _diff(after: SynthesisStats, before: SynthesisStats) -> SynthesisStats:
    d, b = after.to_dict(), before.to_dict()
    fields = {k: (v - b[k] if not isinstance(v, dict) else {kk: vv - b[k].get(kk, 0) for kk, vv in v.items()})
              for k, v in d.items()}
    fields["pairs_per_row"] = {k: v for k, v in fields["pairs_per_row"].items() if v}
    return SynthesisStats.from_dict(fields)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
