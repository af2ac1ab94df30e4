"""Turn what a user names on the command line into a ``datasets.Dataset``.

INPUT may be a ``.jsonl``/``.json``/``.parquet``/``.csv``/``.txt`` file (one text per line
for ``.txt``), a folder of such files, a folder written by ``save_to_disk``, or a Hub
dataset id.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


class InputError(ValueError):
    """The input cannot be read as given; the message says what to do."""


def load_input(spec: str, split: str | None = None, streaming: bool = False):
    """Load INPUT as one split of a ``Dataset`` (an ``IterableDataset`` with ``streaming``).

    Example:
        >>> ds = load_input("examples/data/paragraphs.jsonl")  # doctest: +SKIP
        >>> ds.column_names  # doctest: +SKIP
        ['text', 'source']
    """
    import datasets

    path = Path(spec)
    if path.is_file():
        builder = _builder_for(path)
        loaded = datasets.load_dataset(builder, data_files={"train": str(path)}, streaming=streaming)
    elif path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if streaming:
                loaded = _pick_split(loaded, spec, split).to_iterable_dataset()
        else:
            files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in BUILDERS]
            if not files:
                raise InputError(f"{spec}: the folder holds no {'/'.join(BUILDERS)} files and is not a "
                                 "save_to_disk dataset")
            counts = Counter(BUILDERS[p.suffix.lower()] for p in files)
            if len(counts) > 1:
                raise InputError(f"{spec}: the folder mixes formats ({dict(counts)}); keep one format per folder")
            builder = next(iter(counts))
            loaded = datasets.load_dataset(builder, data_files={"train": [str(p) for p in files]}, streaming=streaming)
    elif path.suffix.lower() in BUILDERS or spec.startswith((".", "/")) or spec.count("/") > 1:
        raise InputError(f"{spec}: no such file or folder")
    elif path.suffix:
        raise InputError(f"{spec}: unknown format {path.suffix!r}; use one of {', '.join(BUILDERS)}")
    else:
        try:
            loaded = datasets.load_dataset(spec, streaming=streaming)
        except Exception as err:  # noqa: BLE001 - any failure to reach or read the Hub dataset
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(f"could not load the Hub dataset {spec!r} ({first}). Offline? Pass a local file, "
                             "folder or save_to_disk dataset instead.") from err
    return _pick_split(loaded, spec, split)


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
