"""The main job: a dataset in, parquet shards and ``stats.json`` out; resumable.

Rows are processed in shards of ``shard_rows``; each finished shard is written atomically
(temporary file, then rename) to ``DIR/data/{split}-{index:05d}.parquet`` and recorded in
``DIR/manifest.json`` with its counters. Re-running the same job continues at the first
missing shard; a job with other input or parameters is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from . import __version__
from .stats import SynthesisStats
from .synthesizer import InstructionSynthesizer

MANIFEST = "manifest.json"
_JOB_WORDS = {"rounds": "number of rounds", "templify_seed": "seed", "input": "input data", "synthesizer": "model or generation parameters", "rows": "row count (--limit)",
              "shard_rows": "shard size", "text_column": "text column", "package_version": "package version"}


class OutputDirError(ValueError):
    """The output folder holds something this job must not overwrite or cannot resume."""


def synthesize_to_dir(dataset, synthesizer: InstructionSynthesizer, output_dir: str | os.PathLike, *,
                      split: str = "train", shard_rows: int = 10_000, batch_size: int = 256,
                      overwrite: bool = False, progress: bool = True, rounds: int = 1,
                      seed: int = 0) -> SynthesisStats:
    """Run ``synthesizer`` over ``dataset`` into ``output_dir``; return the merged counters.

    With ``rounds`` > 1, each shard's rows are chained M-shot (:mod:`~hf_instruct_synth.rounds`)
    and the shard holds one row per chain, with templified ``augmented_texts``.

    Example:
        >>> from hf_instruct_synth import DEMO_MODEL, InstructionSynthesizer
        >>> from hf_instruct_synth.inputs import load_input
        >>> stats = synthesize_to_dir(load_input("examples/data/paragraphs.jsonl"),
        ...                           InstructionSynthesizer(model=DEMO_MODEL), "out/")  # doctest: +SKIP
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    out = Path(output_dir)
    job = {
        "package_version": __version__,
        "input": dataset._fingerprint,
        "synthesizer": synthesizer.fingerprint(),
        "text_column": synthesizer.text_column,
        "split": split,
        "shard_rows": shard_rows,
        "rows": len(dataset),
        "rounds": rounds,
        "templify_seed": seed if rounds > 1 else None,
    }
    manifest = _prepare(out, job, overwrite)
    done = {s["index"] for s in manifest["shards"]}
    starts = list(range(0, len(dataset), shard_rows))
    todo = [i for i in range(len(starts)) if i not in done]
    if todo:
        synthesizer._load()  # fail on a bad model before the first shard, not inside it
    bar = tqdm(total=len(dataset), unit="row", desc="Synthesizing", disable=not progress, dynamic_ncols=True)
    bar.update(sum(s["stop"] - s["start"] for s in manifest["shards"]))
    for index in todo:
        start, stop = starts[index], min(starts[index] + shard_rows, len(dataset))
        before = SynthesisStats().merge(synthesizer.stats)
        tables = []
        if rounds > 1:
            from .rounds import synthesize_rounds

            chains = synthesize_rounds(dataset.select(range(start, stop)), synthesizer, rounds, seed=seed,
                                       row_offset=start)
            tables.append(chains.data.table)
            bar.update(stop - start)
        for offset in range(start, stop, batch_size) if rounds == 1 else ():
            rows = list(range(offset, min(offset + batch_size, stop)))
            table = dataset.select(rows).with_format("arrow")[:]
            batch = {synthesizer.text_column: table.column(synthesizer.text_column).to_pylist()} \
                if synthesizer.text_column in table.column_names else table.to_pydict()
            result = synthesizer(batch, rows)  # the indices name rows in error messages
            for name, values in result.items():
                table = table.append_column(name, pa.array(values))
            tables.append(table)
            bar.update(len(rows))
        rel = f"data/{split}-{index:05d}.parquet"
        tmp = out / f"{rel}.tmp"
        pq.write_table(pa.concat_tables(tables), tmp)
        os.replace(tmp, out / rel)
        shard_stats = _diff(synthesizer.stats, before)
        manifest["shards"].append({"index": index, "start": start, "stop": stop, "file": rel,
                                   "stats": shard_stats.to_dict()})
        manifest["shards"].sort(key=lambda s: s["index"])
        _write_json(out / MANIFEST, manifest)
    bar.close()
    total = SynthesisStats()
    for shard in manifest["shards"]:
        total.merge(SynthesisStats.from_dict(shard["stats"]))
    manifest["complete"] = len(manifest["shards"]) == len(starts)
    _write_json(out / MANIFEST, manifest)
    _write_json(out / "stats.json", total.to_dict())
    return total


def _prepare(out: Path, job: dict, overwrite: bool) -> dict:
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
            return manifest
    (out / "data").mkdir(parents=True, exist_ok=True)
    manifest = {"job": job, "shards": [], "complete": False}
    _write_json(out / MANIFEST, manifest)
    return manifest


def _diff(after: SynthesisStats, before: SynthesisStats) -> SynthesisStats:
    d = after.to_dict()
    b = before.to_dict()
    fields = {k: (v - b[k] if not isinstance(v, dict) else {kk: vv - b[k].get(kk, 0) for kk, vv in v.items()})
              for k, v in d.items()}
    fields["pairs_per_row"] = {k: v for k, v in fields["pairs_per_row"].items() if v}
    return SynthesisStats.from_dict(fields)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
