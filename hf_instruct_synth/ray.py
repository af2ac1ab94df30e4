"""Many machines: the main job on Ray Data, one synthesizer actor per GPU (extra ``ray``).

The work is cut into units that each become one output shard: an input parquet file, or
``shard_rows`` consecutive rows of a ``datasets.Dataset``. A Ray Data pipeline over the
units runs ``map_batches`` with a stateful actor that loads the synthesizer once and
writes each unit's shard and sidecar into ``output_dir``, exactly as the single-process
runner (:mod:`hf_instruct_synth.run`) does. Units whose shard is already there are not
scheduled again, so a killed job resumes at file level; the counters are merged from the
sidecars. On a cluster, ``output_dir`` (and the input files) must be on storage every
node sees, e.g. a shared filesystem.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .run import RunOutcome, ShardWriter, check_positive, hardware, job_record, output_features
from .shards import ShardStore
from .stats import SynthesisStats
from .synthesizer import InstructionSynthesizer


class _SynthesizerActor:
    """Holds one loaded synthesizer (Ray gives the actor its GPU as ``cuda:0``) and writes shards."""

    def __init__(self, work: ShardWriter, source: Any):
        self.work, self.source = work, source
        work.synthesizer.load()

    def __call__(self, batch: dict) -> dict:
        import datasets
        import pyarrow.parquet as pq

        rows_done = []
        for unit, path, start, stop in zip(batch["unit"], batch["path"], batch["start"], batch["stop"]):
            if path:
                rows = datasets.Dataset(pq.read_table(str(path)))
            else:
                rows = self.source.select(range(int(start), int(stop)))
            self.work.write(rows, int(unit), int(start))
            rows_done.append(len(rows))
        return {"unit": list(batch["unit"]), "rows": rows_done}


def synthesize_with_ray(
    source: Any,
    synthesizer: InstructionSynthesizer,
    output_dir: str,
    *,
    split: str = "train",
    shard_rows: int = 10_000,
    num_actors: int = 1,
    num_gpus_per_actor: float | None = None,
    num_cpus_per_actor: float = 1,
    batch_size: int = 256,
    rounds: int = 1,
    seed: int = 0,
    overwrite: bool = False,
    source_id: str | None = None,
    input_paths: tuple[str, ...] = (),
    about: dict | None = None,
    templify: bool = True,
    history_budget: str = "tokens",
    report: bool = False,
) -> SynthesisStats | RunOutcome:
    """Run the job on Ray: ``source`` is a ``datasets.Dataset``, a parquet file, a folder of them, or a list of files.

    ``num_actors`` synthesizer actors run at once, each with ``num_gpus_per_actor`` GPUs
    (default: 1 when the Ray cluster has GPUs, else 0). Connect to a cluster first with
    ``ray.init(address="auto")``; without it Ray starts a local instance. The output
    folder is a :class:`~hf_instruct_synth.shards.ShardStore`, locked by this driver;
    ``source_id`` replaces the input's identity; ``report=True`` returns a ``RunOutcome``.

    Example:
        >>> import ray; ray.init(address="auto")  # doctest: +SKIP
        >>> stats = synthesize_with_ray("/shared/corpus/", InstructionSynthesizer(), "/shared/out",
        ...                             num_actors=16)  # doctest: +SKIP
    """
    import pyarrow.parquet as pq
    import ray

    check_positive(shard_rows=shard_rows, num_actors=num_actors, batch_size=batch_size, rounds=rounds)
    units, fingerprint, dataset, schema = _units(source, shard_rows, pq)
    job = job_record(synthesizer, source_id or fingerprint, split=split, shard_rows=shard_rows,
                     rows=units[-1]["stop"] if units else 0, rounds=rounds, seed=seed, templify=templify,
                     history_budget=history_budget)
    if dataset is not None:
        schema = output_features(dataset.features, synthesizer, rounds, templify).arrow_schema
    elif rounds > 1:
        schema = output_features(None, synthesizer, rounds, templify).arrow_schema
    else:
        import datasets

        schema = output_features(datasets.Features.from_arrow_schema(schema), synthesizer, rounds, templify).arrow_schema
    store = ShardStore(output_dir, job, split=split, schema=schema,
                       input_paths=tuple(input_paths) or tuple(u["path"] for u in units if u["path"]),
                       about=about or {"generation": synthesizer.settings()})
    with store.open(overwrite=overwrite):
        synthesizer.pin_revision(store.job.get("model_commit"))
        done = store.verify()
        before = set(done)
        todo = [u for u in units if u["unit"] not in done]
        if todo:
            if not ray.is_initialized():
                ray.init()
            if num_gpus_per_actor is None:
                num_gpus_per_actor = 1 if ray.cluster_resources().get("GPU", 0) else 0
            work = ShardWriter(synthesizer, store, batch_size, rounds, seed, templify, history_budget)
            pipeline = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
                _SynthesizerActor, fn_constructor_kwargs={"work": work, "source": dataset}, batch_size=1,
                concurrency=max(1, min(num_actors, len(todo))), num_gpus=num_gpus_per_actor,
                num_cpus=num_cpus_per_actor)
            written = pipeline.take_all()
            if sorted(r["unit"] for r in written) != sorted(u["unit"] for u in todo):
                raise RuntimeError("Ray returned other units than it was given; re-run the same command to resume")
        total = store.finalize(expected_shards=len(units), about={"hardware": hardware()})
        outcome = RunOutcome.of(store, total, before, expected=len(units))
    return outcome if report else total


def _units(source: Any, shard_rows: int, pq) -> tuple[list[dict], str, Any, Any]:
    """Units of work, a fingerprint of the input, the dataset the actors read rows from (or None),
    and the input files' unified schema (or None)."""
    import datasets

    if isinstance(source, datasets.Dataset):
        starts = range(0, len(source), shard_rows)
        units = [{"unit": i, "path": "", "start": s, "stop": min(s + shard_rows, len(source))}
                 for i, s in enumerate(starts)]
        return units, source._fingerprint, source, None
    paths = [Path(p) for p in ([source] if isinstance(source, (str, Path)) else source)]
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.parquet")))
    if not files:
        raise ValueError(f"no parquet files in {source}")
    import pyarrow as pa

    units, start, h, schemas = [], 0, hashlib.sha256(), []
    for i, f in enumerate(files):
        meta = pq.ParquetFile(f)
        n = meta.metadata.num_rows
        schemas.append(meta.schema_arrow)
        units.append({"unit": i, "path": str(f), "start": start, "stop": start + n})
        h.update(f"{f.name}:{f.stat().st_size}:{n}:".encode())
        with open(f, "rb") as fh:  # content, not names or times: a copied corpus is the same input
            h.update(fh.read(1 << 20))
            fh.seek(max(0, f.stat().st_size - (1 << 20)))
            h.update(fh.read())
        start += n
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"the input files' columns disagree ({err}); give every file one schema") from None
    return units, h.hexdigest()[:24], None, schema
