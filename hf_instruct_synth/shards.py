"""The output folder: a verified shard store that survives kills, damage and a second writer.

Layout of ``DIR`` (it is itself a dataset: ``load_dataset(DIR, split="train")`` reads the
shards in input order; ``datasets`` ignores hidden folders and the two top-level files)::

    DIR/manifest.json                     the job record, the output schema, complete or not
    DIR/stats.json                        counters merged over every finished shard
    DIR/data/{split}-NNNNN.parquet        one shard: rows [start, stop) of the input
    DIR/.hf-instruct-synth/{split}-NNNNN.json   its sidecar: range, rows, size, sha256, counters
    DIR/.hf-instruct-synth/lock           held (flock) by the process that writes DIR

A shard is written to a temporary file, flushed to disk and renamed; its sidecar follows
the same way, so a shard counts as finished only once both are in place. Before a run
resumes, every finished shard is checked against its sidecar (size, sha256, row count,
row range); a shard that fails is named, removed and generated again, never trusted.
``overwrite`` removes only what a run of ours wrote, and only from a folder that holds
nothing else.

Example:
    >>> store = ShardStore("out/", {"input": "…", "synthesizer": "…"})  # doctest: +SKIP
    >>> with store.open(overwrite=False):  # doctest: +SKIP
    ...     for index, start, stop in store.todo(total_rows=100, shard_rows=10):
    ...         store.write(index, start, table, stats)
    ...     store.finalize(expected_shards=10)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .stats import SynthesisStats

MANIFEST = "manifest.json"
STATS = "stats.json"
META_DIR = ".hf-instruct-synth"
LOCK = "lock"
#: Files a run of ours writes at the top of DIR (the card is written by ``push``'s dry runs and users).
OWN_TOP_FILES = (MANIFEST, STATS, MANIFEST + ".tmp", STATS + ".tmp")
#: Job fields the first run resolves and a resume takes over (a model revision's commit), not compares.
RESOLVED = ("model_commit",)
_SHARD = re.compile(r"(?P<split>[A-Za-z0-9_.]+)-(?P<index>\d{5})\.parquet(\.tmp)?")
_JOB_WORDS = {"rounds": "number of rounds", "templify_seed": "seed", "input": "input data",
              "synthesizer": "model or generation parameters", "rows": "row count (--limit)",
              "shard_rows": "shard size", "text_column": "text column", "package_version": "package version",
              "templify": "templify setting", "history_budget": "history budget", "split": "split"}


class OutputDirError(ValueError):
    """The output folder holds something this job must not touch, or cannot resume; the message says why."""


@dataclass
class ShardInfo:
    """What the sidecar of one finished shard records."""

    index: int
    start: int  # input rows [start, stop) went into this shard
    stop: int
    rows: int  # rows in the file
    file: str
    size: int
    sha256: str
    worker: int = 0
    stats: dict = field(default_factory=dict)
    placement: dict = field(default_factory=dict)  # where the writing process ran its model


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks.

    Example:
        >>> import tempfile; p = tempfile.mktemp(); _ = open(p, "wb").write(b"abc")
        >>> sha256_file(p)[:12]
        'ba7816bf8f01'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to ``path`` through a temporary file, flushed and renamed: never half-written."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardStore:
    """One output folder and the job it belongs to.

    ``job`` is the frozen record of what the run computes (input, model and parameters):
    a folder holding a different job is refused. ``input_paths`` are local files the run
    reads; a folder containing one of them is never overwritten.
    """

    def __init__(self, root: str | os.PathLike, job: dict, *, split: str = "train",
                 input_paths: list[str] | tuple[str, ...] = (), schema: Any = None,
                 about: dict | None = None) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.]+", split):
            raise ValueError(f"split names may hold letters, digits, '_' and '.', got {split!r}")
        self.root = Path(root)
        self.job = dict(job)
        self.split = split
        self.input_paths = [Path(p) for p in input_paths]
        self.schema = schema  # pyarrow.Schema every shard is cast to; None: taken from the first shard
        self.about = dict(about or {})  # how the data was made (card, reproduction); recorded, not compared
        self.resumed = False  # the folder held this job already
        self.repaired: list[str] = []  # what verification found and removed
        self.removed: list[str] = []  # what overwrite removed
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ opening and locking
    def open(self, overwrite: bool = False) -> ShardStore:
        """Check, lock and prepare the folder; resume the same job or refuse another one."""
        self._refuse_dangerous(overwrite)
        self.root.mkdir(parents=True, exist_ok=True)
        foreign = self._foreign_entries()
        manifest = self._read_manifest()
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            what = "files this tool did not write" if manifest is not None else "files and no manifest.json of a run"
            raise OutputDirError(f"{self.root} holds {what} ({shown}); pick an empty or new folder for --output"
                                 + (" (--overwrite removes only a run's own files)" if overwrite else ""))
        self._lock()
        try:
            leftovers = [r for r in self._own_files() if r != f"{META_DIR}/{LOCK}"]
            if manifest is None and leftovers and not overwrite:
                raise OutputDirError(f"{self.root} holds shards but no {MANIFEST}: they cannot be checked against a "
                                     "job; pick another --output, or pass --overwrite to remove them")
            if overwrite and leftovers:
                self._remove_own_files()
                manifest = None
            if manifest is not None:
                changed = [_JOB_WORDS.get(k, k) for k in sorted(set(self.job) | set(manifest.get("job", {})))
                           if k not in RESOLVED and manifest.get("job", {}).get(k) != self.job.get(k)]
                if changed:
                    raise OutputDirError(
                        f"{self.root} holds a run with a different {', '.join(changed)}; re-run its own command "
                        "to resume it, use another --output, or pass --overwrite to start over")
                self.resumed = True
                self.about = manifest.get("about", self.about)
                self.job = manifest["job"]  # values resolved by the first run (e.g. the model commit) stay
            else:
                (self.root / "data").mkdir(exist_ok=True)
                write_json_atomic(self.root / MANIFEST, {
                    "job": self.job, "about": self.about, "shards": 0, "complete": False,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            self._remove_temporaries()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Release the lock (also done by the OS when the process dies)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ShardStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict:  # worker processes get a writer without the lock
        state = self.__dict__.copy()
        state["_lock_fd"] = None
        return state

    def _lock(self) -> None:
        import fcntl

        meta = self.root / META_DIR
        meta.mkdir(exist_ok=True)
        fd = os.open(meta / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputDirError(f"{self.root} is being written by {holder}; wait for it to finish, or use "
                                 "another --output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {os.uname().nodename}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._lock_fd = fd

    def _refuse_dangerous(self, overwrite: bool) -> None:
        root = self.root.resolve()
        cwd = Path.cwd().resolve()
        if root == cwd or root in cwd.parents:
            raise OutputDirError(f"--output {self.root} is the current folder or holds it; write into a "
                                 "new subfolder, e.g. --output out/")
        for p in self.input_paths:
            p = p.resolve()
            if p == root or root in p.parents:
                raise OutputDirError(f"--output {self.root} holds the input {p}; pick a folder outside the input")
        if root.exists() and not root.is_dir():
            raise OutputDirError(f"--output {self.root} is a file, not a folder")

    def _own(self, rel: str) -> bool:
        parts = rel.split("/")
        if len(parts) == 1:
            return parts[0] in OWN_TOP_FILES or parts[0] in ("data", META_DIR)
        if parts[0] == META_DIR:
            return True
        return len(parts) == 2 and parts[0] == "data" and _SHARD.fullmatch(parts[1]) is not None

    def _foreign_entries(self) -> list[str]:
        out = []
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root).as_posix()
            if p.is_dir() and rel in ("data", META_DIR):
                continue
            if rel.startswith(META_DIR + "/"):
                continue
            if p.is_symlink() or not self._own(rel) or (p.is_dir() and rel != "data"):
                out.append(rel)
        return out

    def _read_manifest(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text())
            if not isinstance(manifest, dict) or not isinstance(manifest.get("job"), dict):
                raise ValueError("no job record")
        except (ValueError, OSError) as err:
            raise OutputDirError(f"{path} is damaged ({err}); this folder's run cannot be resumed: move it "
                                 "away or pick another --output") from None
        return manifest

    def _own_files(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in sorted(self.root.rglob("*")) if p.is_file()]

    def _remove_own_files(self) -> None:
        for rel in self._own_files():  # _foreign_entries() found nothing else in the folder
            if rel != f"{META_DIR}/{LOCK}":
                (self.root / rel).unlink()
                self.removed.append(rel)

    def _remove_temporaries(self) -> None:
        for p in list((self.root / "data").glob("*.tmp")) + list((self.root / META_DIR).glob("*.tmp")):
            p.unlink()

    # ------------------------------------------------------------------ shards
    def shard_path(self, index: int) -> Path:
        return self.root / "data" / f"{self.split}-{index:05d}.parquet"

    def sidecar_path(self, index: int) -> Path:
        return self.root / META_DIR / f"{self.split}-{index:05d}.json"

    def finished(self) -> dict[int, ShardInfo]:
        """Shards whose sidecar exists, by index (not verified: see :meth:`verify`)."""
        found = {}
        for f in sorted((self.root / META_DIR).glob(f"{self.split}-[0-9][0-9][0-9][0-9][0-9].json")):
            try:
                info = ShardInfo(**json.loads(f.read_text()))
            except (ValueError, TypeError):
                continue  # unreadable sidecar: the shard is not finished (verify() names it)
            found[info.index] = info
        return found

    def verify(self, shard_rows: int | None = None, total_rows: int | None = None, *,
               repair: bool = True) -> dict[int, ShardInfo]:
        """Check every finished shard; name each that fails in :attr:`repaired`; return the good ones.

        A shard passes when its file exists with the recorded size and sha256, holds the
        recorded number of rows, and (with ``shard_rows``) covers the rows its index says.
        With ``repair`` (a run about to resume, holding the lock) a failing shard and its
        sidecar are removed, to be generated again; without it nothing is touched.
        """
        import pyarrow.parquet as pq

        good: dict[int, ShardInfo] = {}
        sidecars = sorted((self.root / META_DIR).glob(f"{self.split}-[0-9][0-9][0-9][0-9][0-9].json"))
        for side in sidecars:
            index = int(side.stem.rsplit("-", 1)[1])
            path = self.shard_path(index)
            problem = None
            try:
                info = ShardInfo(**json.loads(side.read_text()))
            except (ValueError, TypeError) as err:
                info, problem = None, f"its sidecar is unreadable ({type(err).__name__})"
            if info is not None:
                if info.index != index or info.file != path.relative_to(self.root).as_posix():
                    problem = "its sidecar belongs to another shard"
                elif not path.exists():
                    problem = "its file is missing"
                elif path.stat().st_size != info.size:
                    problem = f"its file has {path.stat().st_size} bytes, {info.size} were written"
                elif sha256_file(path) != info.sha256:
                    problem = "its file's sha256 differs from the one written"
                elif shard_rows is not None and (info.start != index * shard_rows or
                                                 (total_rows is not None and info.stop != min(
                                                     info.start + shard_rows, total_rows))):
                    problem = f"it holds rows {info.start}..{info.stop}, not those of shard {index}"
                else:
                    try:
                        n = pq.ParquetFile(path).metadata.num_rows
                        if n != info.rows:
                            problem = f"its file holds {n} rows, {info.rows} were written"
                    except Exception as err:  # noqa: BLE001 - any unreadable parquet
                        problem = f"its file is not readable parquet ({type(err).__name__})"
            if problem:
                self.repaired.append(f"shard {index} ({path.relative_to(self.root)}): {problem}"
                                     + ("; generating it again" if repair else ""))
                if repair:
                    path.unlink(missing_ok=True)
                    side.unlink(missing_ok=True)
            else:
                good[index] = info  # type: ignore[assignment]
        # a shard file without a sidecar was cut off before it finished: it is rewritten when its turn comes
        return good

    def todo(self, total_rows: int, shard_rows: int, done: set[int] | None = None) -> list[tuple[int, int, int]]:
        """``(index, start, stop)`` of every shard still to write; ``done``: the indices :meth:`verify`
        returned (verified here when not given: each check reads every finished shard whole)."""
        if done is None:
            done = set(self.verify(shard_rows, total_rows))
        starts = range(0, total_rows, shard_rows)
        return [(i, s, min(s + shard_rows, total_rows)) for i, s in enumerate(starts) if i not in done]

    def write(self, index: int, start: int, table: Any, stats: SynthesisStats, *, input_rows: int,
              worker: int = 0, placement: dict | None = None) -> ShardInfo:
        """Write one shard (an Arrow table) atomically, then its sidecar; return what was recorded.

        ``input_rows`` is how many input rows the shard covers, ``[start, start + input_rows)``;
        the file holds ``table.num_rows`` rows (fewer with rounds: one per chain).
        """
        import pyarrow.parquet as pq

        table = self.conform(table)
        path = self.shard_path(index)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        info = ShardInfo(index=index, start=start, stop=start + input_rows, rows=table.num_rows,
                         file=path.relative_to(self.root).as_posix(), size=path.stat().st_size,
                         sha256=sha256_file(path), worker=worker, stats=stats.to_dict(),
                         placement=dict(placement or {}))
        write_json_atomic(self.sidecar_path(index), asdict(info))
        return info

    def conform(self, table: Any) -> Any:
        """Cast ``table`` to the run's one schema; the first shard fixes it when none was given.

        A column that earlier shards held only as nulls takes its first real type: earlier
        shards are rewritten to it (losslessly) so that every shard keeps one schema.
        """
        import pyarrow as pa

        if self.schema is None:
            existing = sorted(self.finished())
            if existing:
                import pyarrow.parquet as pq

                self.schema = pq.read_schema(self.shard_path(existing[0]))
            else:
                self.schema = table.schema
                return table
        if table.schema.equals(self.schema):  # equal types; the run's metadata, so every shard records the same
            return table.replace_schema_metadata(self.schema.metadata)
        try:
            merged = pa.unify_schemas([self.schema, table.schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise OutputDirError(f"this shard's columns do not fit the run's schema ({err}); every row of a column "
                                 "must hold one type") from None
        merged = _features_metadata(pa.schema([merged.field(f.name) for f in self.schema] +
                                              [f for f in merged if f.name not in self.schema.names],
                                              metadata=self.schema.metadata))
        if not merged.equals(self.schema):
            self._rewrite_finished(merged)
            self.schema = merged
        return table.select(self.schema.names).cast(self.schema)

    def _rewrite_finished(self, schema: Any) -> None:
        import pyarrow.parquet as pq

        for index, info in sorted(self.finished().items()):
            path = self.shard_path(index)
            table = pq.read_table(path).cast(schema)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                pq.write_table(table, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # a kill here leaves a sidecar whose sha256 no longer matches: regenerated
            info.size, info.sha256 = path.stat().st_size, sha256_file(path)
            write_json_atomic(self.sidecar_path(index), asdict(info))

    # ------------------------------------------------------------------ the end
    def finalize(self, expected_shards: int | None, about: dict | None = None) -> SynthesisStats:
        """Merge the finished shards' counters into ``stats.json``, mark the manifest; return them.

        ``about`` adds what the run learned (e.g. the hardware) to the manifest's record.
        """
        finished = self.finished()
        total = SynthesisStats()
        for shard in finished.values():
            total.merge(SynthesisStats.from_dict(shard.stats))
        manifest = json.loads((self.root / MANIFEST).read_text())
        manifest.setdefault("about", {}).update(about or {})
        manifest["shards"] = len(finished)
        manifest["rows"] = sum(s.rows for s in finished.values())  # rows in the shards
        manifest["complete"] = expected_shards is None or len(finished) == expected_shards
        if manifest["complete"]:
            manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json_atomic(self.root / MANIFEST, manifest)
        write_json_atomic(self.root / STATS, total.to_dict())
        return total

    def shard_files(self) -> list[Path]:
        """The finished shards' files, in input order."""
        return [self.shard_path(i) for i in sorted(self.finished())]


def _features_metadata(schema: Any) -> Any:
    """``schema`` with the ``datasets`` features it records (``huggingface`` metadata) made to match its
    Arrow types: a column first seen only as nulls is recorded as ``null`` by ``datasets``, and once a
    later shard gives it a type, every shard must say that type (readers take the features from there)."""
    meta = dict(schema.metadata or {})
    if b"huggingface" not in meta:
        return schema
    from datasets import Features

    try:
        record = json.loads(meta[b"huggingface"])
    except ValueError:
        record = {}
    record.setdefault("info", {})["features"] = Features.from_arrow_schema(schema.remove_metadata()).to_dict()
    meta[b"huggingface"] = json.dumps(record).encode()
    return schema.with_metadata(meta)


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a run's folder, or an :class:`OutputDirError` saying it is not one."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise OutputDirError(f"{root} holds no {MANIFEST}: it is not an output folder of hf-instruct-synth")
    return json.loads(path.read_text())
