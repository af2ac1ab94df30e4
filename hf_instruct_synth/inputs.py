"""INPUT to rows: files, folders, Hub ids, streaming. Bad input is named here.

INPUT may be a ``.jsonl``/``.json``/``.parquet``/``.csv``/``.txt`` file, a folder of such
files (``datasets``' own split inference: ``data/train-*`` and ``data/test-*`` are two
splits), a folder written by ``save_to_disk``, or a Hub dataset id (with a subset and a
revision). Every text reaches the synthesizer as the string the file holds: a value that
is not a string (a number, a list, a JSON object, a string that is not valid Unicode) is a
bad row, named by its row number (:func:`text_problem`).
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
TEXT_BUILDERS = ("json", "csv", "text")
SAMPLE_BY = ("line", "paragraph", "document")
_SAVED = ("dataset_info.json", "dataset_dict.json", "state.json")


class InputError(ValueError):
    """The input cannot be read as given; the message says what to do."""


class EmptyInputError(InputError):
    """The input holds no rows."""


@dataclass
class InputSource:
    """What a run reads: the rows, a stable identity of the input, and the local files behind it.

    ``identity`` names the input by content (local files: names, sizes, sha256; Hub:
    id, subset, split and the commit the revision resolved to), so a resume recognises
    the same input whatever its files' modification times.
    """

    dataset: Any
    identity: str
    paths: list[str] = field(default_factory=list)
    hub_commit: str | None = None


def text_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a text to synthesize from, or ``None`` when it can.

    Example:
        >>> text_problem("A river."), text_problem(42), text_problem("bad \\ud800 text")
        (None, 'int (42), not a string', 'a string that is not valid Unicode (a lone surrogate at character 4)')
    """
    if not isinstance(value, str):
        return f"{type(value).__name__} ({value!r:.40}), not a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"a string that is not valid Unicode (a lone surrogate at character {err.start})"
    return None


def as_text(value: Any) -> str | None:
    """``value`` when it is a valid text, else ``None`` (what a bad row's text column holds in the output).

    Example:
        >>> as_text("ok"), as_text(3.5)
        ('ok', None)
    """
    return value if text_problem(value) is None else None


def load_input(spec: str, split: str | None = None, streaming: bool = False, **options: Any):
    """Load INPUT as one split of a ``Dataset`` (an ``IterableDataset`` with ``streaming``).

    ``options`` are those of :func:`open_input` (``subset``, ``data_revision``, ``limit``,
    ``encoding``, ``sample_by``).

    Example:
        >>> ds = load_input("examples/data/paragraphs.jsonl")  # doctest: +SKIP
        >>> ds.column_names  # doctest: +SKIP
        ['text', 'source']
    """
    return open_input(spec, split, streaming=streaming, **options).dataset


def open_input(spec: str, split: str | None = None, *, streaming: bool = False, subset: str | None = None,
               data_revision: str | None = None, limit: int | None = None, encoding: str | None = None,
               sample_by: str = "paragraph") -> InputSource:
    """Open INPUT: its rows (one split), its identity and its local files.

    ``limit`` takes the first N rows; for a Hub dataset they are streamed, so only the
    files those rows live in are fetched. ``encoding`` decodes text files (default
    UTF-8); ``sample_by`` cuts ``.txt`` files into rows by ``line``, ``paragraph``
    (default; blank lines separate) or ``document``; blank rows are never made.

    Example:
        >>> src = open_input("user/corpus", subset="fr", limit=3)  # doctest: +SKIP
        >>> len(src.dataset), src.identity  # doctest: +SKIP
        (3, 'hub:user/corpus:fr@3f2a…:train:3')
    """
    import datasets

    if limit is not None and limit < 0:
        raise InputError(f"--limit must be 0 or more, got {limit}")
    if sample_by not in SAMPLE_BY:
        raise InputError(f"--sample-by must be one of {', '.join(SAMPLE_BY)}, got {sample_by!r}")
    if encoding is not None:
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            raise InputError(f"unknown --encoding {encoding!r}; e.g. utf-8, latin-1, cp1252") from None
    path = Path(spec)
    hub_commit = None
    if path.is_file() or path.is_dir():
        files = _local_files(path, spec)
        builder = _builder_for(path) if path.is_file() else None
        saved = path.is_dir() and any((path / n).exists() for n in _SAVED)
        if saved:
            try:
                loaded = datasets.load_from_disk(str(path))
            except IndexError:  # datasets fails so on a saved dataset of no rows
                raise EmptyInputError(f"{spec} holds no rows") from None
            loaded = _pick_split(loaded, spec, split)
            if streaming:
                loaded = loaded.to_iterable_dataset()
        else:
            builders = _builders_of(files)
            for f in files:
                if BUILDERS[f.suffix.lower()] in TEXT_BUILDERS:
                    _check_decodes(f, encoding or "utf-8")
            kwargs: dict[str, Any] = {}
            if encoding and builders <= set(TEXT_BUILDERS):
                kwargs["encoding"] = encoding
            if "text" in builders:
                kwargs["sample_by"] = sample_by
            if all(f.stat().st_size == 0 for f in files):
                raise EmptyInputError(f"{spec} holds no rows")
            try:
                if builder is not None:
                    loaded = datasets.load_dataset(builder, data_files={"train": str(path)}, streaming=streaming,
                                                   **kwargs)
                else:
                    loaded = datasets.load_dataset(str(path), streaming=streaming, **kwargs)
            except Exception as err:  # noqa: BLE001 - datasets' own failure, made readable
                if "corresponds to no data" in str(err):  # a header-only CSV, a parquet file of no rows
                    raise EmptyInputError(f"{spec} holds no rows") from None
                raise _read_error(spec, err) from err
            loaded = _pick_split(loaded, spec, split)
        identity = "files:" + _files_digest(sorted(p for p in path.rglob("*") if p.is_file()) if saved else files,
                                            path)
        paths = [str(p) for p in files]
        if "text" in _builders_of(files):
            loaded = _paragraphs(loaded) if sample_by == "paragraph" else _drop_blank(loaded)
    elif path.suffix.lower() in BUILDERS or spec.startswith((".", "/")) or spec.count("/") > 1:
        raise InputError(f"{spec}: no such file or folder")
    elif path.suffix:
        raise InputError(f"{spec}: unknown format {path.suffix!r}; use one of {', '.join(BUILDERS)}")
    else:
        hub_commit = _hub_commit(spec, data_revision)
        try:
            loaded = datasets.load_dataset(spec, subset, revision=hub_commit or data_revision,
                                           streaming=streaming or limit is not None)
        except Exception as err:  # noqa: BLE001 - any failure to reach or read the Hub dataset
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"could not load the Hub dataset {spec!r}{f' (subset {subset!r})' if subset else ''}: "
                             f"{first}") from err
        loaded = _pick_split(loaded, spec, split)
        identity = f"hub:{spec}:{subset or ''}@{hub_commit or data_revision or 'main'}"
        paths = []
    if limit is not None:
        loaded = _take(loaded, limit, streaming)
    identity += f":{split or 'train'}:{'' if limit is None else limit}"
    _check_not_empty(loaded, spec)
    return InputSource(loaded, identity, paths, hub_commit)


def _take(loaded, limit: int, streaming: bool):
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return loaded.select(range(min(limit, len(loaded))))
    taken = loaded.take(limit)
    if streaming:
        return taken
    rows = list(taken)  # only the files these rows live in are read
    return datasets.Dataset.from_list(rows, features=loaded.features) if rows else datasets.Dataset.from_dict({})


def _check_not_empty(loaded, spec: str) -> None:
    import datasets

    if isinstance(loaded, datasets.Dataset):
        empty = len(loaded) == 0
    else:
        empty = next(iter(loaded.take(1)), None) is None
    if empty:
        raise EmptyInputError(f"{spec} holds no rows")


_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


def _paragraphs(loaded):
    """Cut ``.txt`` rows at every blank line (also one holding spaces); no blank row is kept."""
    def split(batch):
        parts = [p.strip("\n") for text in batch["text"] for p in _BLANK_LINE.split(text)]
        return {"text": [p for p in parts if p.strip()]}

    return loaded.map(split, batched=True, remove_columns=["text"])


def _drop_blank(loaded):
    """Rows of a ``.txt`` input whose text is blank are not rows (blank lines separate, they are not data)."""
    return loaded.filter(lambda row: bool(row["text"].strip()))


def _local_files(path: Path, spec: str) -> list[Path]:
    if path.is_file():
        _builder_for(path)
        return [path]
    if any((path / n).exists() for n in _SAVED):
        return []
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in BUILDERS
             and not any(part.startswith((".", "__")) for part in p.relative_to(path).parts)]
    if not files:
        raise InputError(f"{spec}: the folder holds no {'/'.join(BUILDERS)} files and is not a save_to_disk dataset")
    counts = Counter(BUILDERS[p.suffix.lower()] for p in files)
    if len(counts) > 1:
        raise InputError(f"{spec}: the folder mixes formats ({dict(counts)}); keep one format per folder")
    return files


def _builders_of(files: list[Path]) -> set[str]:
    return {BUILDERS[p.suffix.lower()] for p in files}


def _check_decodes(path: Path, encoding: str) -> None:
    """Decode a text file once, naming the file and line of the first bad byte."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines, tail = 0, b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                bad = tail + chunk  # the decoder may hold bytes of the previous chunk
                pos = max(0, err.start + len(tail) - len(decoder.getstate()[0]))
                pos = min(pos, len(bad) - 1)
                line = lines + bad[:pos].count(b"\n") + 1 - tail.count(b"\n")
                raise InputError(f"{path}, line {line}: not valid {encoding} (byte {bad[pos]:#04x}); pass the "
                                 "file's encoding with --encoding, e.g. --encoding latin-1") from None
            lines += chunk.count(b"\n")
            tail = chunk[-4:]
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{path}: ends inside a {encoding} character; pass its encoding with --encoding") from None


_FULL_HASH_BYTES = 256 << 20


def _files_digest(files: list[Path], root: Path) -> str:
    """Names, sizes and content of the input files: all bytes up to 256 MiB a file, 16 spread MiB beyond."""
    h = hashlib.sha256()
    base = root if root.is_dir() else root.parent
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(base)}:{size}:".encode())
        with open(f, "rb") as fh:
            if size <= _FULL_HASH_BYTES:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            else:
                for k in range(16):
                    fh.seek((size - (1 << 20)) * k // 15)
                    h.update(fh.read(1 << 20))
    return h.hexdigest()[:24]


def _read_error(spec: str, err: Exception) -> InputError:
    cause, seen = err, set()
    while cause.__cause__ is not None and id(cause) not in seen:  # datasets wraps the real error
        seen.add(id(cause))
        cause = cause.__cause__
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return InputError(f"{spec}: could not be read ({type(cause).__name__}: {first})")


def _hub_commit(spec: str, revision: str | None) -> str | None:
    """The commit the dataset revision points to; fails in seconds, with the fix, when the Hub is out of reach."""
    from .loading import hub_offline

    if hub_offline():
        return None  # datasets reads its cache, or says it has none
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return HfApi().dataset_info(spec, revision=revision, timeout=10).sha
    except RepositoryNotFoundError:
        raise InputError(f"{spec}: no such dataset on the Hub (or it is private: log in with `hf auth login` "
                         "or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise InputError(f"{spec}: no revision {revision!r} (--data-revision)") from None
    except Exception as err:  # noqa: BLE001 - network trouble of any kind
        raise InputError(f"could not reach the Hub for {spec!r} ({type(err).__name__}). Offline? Set "
                         "HF_HUB_OFFLINE=1 to use a cached copy, or pass a local file or folder.") from None


def _builder_for(path: Path) -> str:
    try:
        return BUILDERS[path.suffix.lower()]
    except KeyError:
        raise InputError(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(BUILDERS)}") from None


def _pick_split(loaded, spec: str, split: str | None):
    import datasets

    if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)):
        return loaded
    names = list(loaded.keys())
    chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
    if chosen is None or chosen not in names:
        raise InputError(f"{spec}: choose a split with --split; splits present: {names}")
    return loaded[chosen]
