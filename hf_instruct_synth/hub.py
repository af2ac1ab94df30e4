"""Publishing a run's shards on the Hub, byte for byte, switched in one commit, with its card.

Where a row goes last: ``DIR/data/{split}-NNNNN.parquet`` (written by the run) is uploaded
unchanged as ``data/{split}-NNNNN.parquet`` of the dataset repo.

1. :func:`check_push_access` runs before any generation: the token, the network and the
   right to write the repo are checked, and the repo is created.
2. Every shard whose sha256 is not on the Hub yet is uploaded as an LFS blob
   (``preupload_lfs_files``); blobs the Hub already holds are not sent again, so a push
   killed at any point resumes by running it again.
3. One commit then adds the new shards, deletes the split's stale ones, and writes the
   card (``README.md``), ``synthesis_stats.json`` and the run's manifest: readers see the
   old data or the new, never a mix. A run of more than ``max_files_per_commit`` files
   (default 1,000: 10 million rows at the default 10,000 rows a shard) is committed in
   groups instead, the card and the deletions last, and a warning says that readers may
   see a mix while it runs.

429 and 5xx answers are retried with backoff (``Retry-After`` honoured); the token is
never printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .card import DataStats, make_dataset_card
from .shards import META_DIR, ShardStore, read_manifest, sha256_file
from .stats import SynthesisStats

STATS_FILE = "synthesis_stats.json"
RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_FILES_PER_COMMIT = 1000


class PushError(RuntimeError):
    """A push failed; the message says why and how to resume it."""


def check_push_access(repo_id: str, *, token: str | None = None, private: bool = False) -> str:
    """Check the token, the network and write access to ``repo_id``, and create the repo; return the user name.

    Called before generation by ``--push-to-hub``, so hours of work never end in a rejected token.

    Example:
        >>> check_push_access("me/corpus-augmented")  # doctest: +SKIP
        'me'
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    secret = token or _cached_token()
    if not secret:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access), "
                        "then run the same command again")
    try:
        me = api.whoami()
    except HfHubHTTPError as err:
        status = err.response.status_code if getattr(err, "response", None) is not None else None
        if status in (401, 403):
            raise PushError("the Hub rejected the token (HTTP 401): set a valid HF_TOKEN or run `hf auth login`, "
                            "then run the same command again") from None
        raise PushError(_redact(f"the Hub answered {status} when checking the token; try again later", secret)) \
            from None
    except Exception as err:  # noqa: BLE001 - no network, DNS, TLS…
        raise PushError(f"could not reach the Hub ({type(err).__name__}); check the network (or HF_ENDPOINT), "
                        "or drop --push-to-hub and publish later with `hf-instruct-synth push DIR REPO_ID`") from None
    user = me.get("name", "")
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    namespaces = {user} | {o.get("name") for o in me.get("orgs") or []}
    namespace = repo_id.split("/")[0] if "/" in repo_id else user
    if role == "read":
        raise PushError("the token can only read: create one with write access (https://huggingface.co/settings/"
                        "tokens) and set HF_TOKEN, then run the same command again")
    if namespace not in namespaces:
        raise PushError(f"{user or 'this token'} cannot write to {namespace}/ (your namespaces: "
                        f"{', '.join(sorted(n for n in namespaces if n))}); pick a repo id in one of them")
    _retry(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
           "create the repo", secret, 5, 1.0)
    return user


def push_output_dir(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str = "main",
    license: str | None = None,
    source_dataset: str | None = None,
    max_files_per_commit: int = MAX_FILES_PER_COMMIT,
    retries: int = 5,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> str:
    """Publish a finished run's folder as a split of ``repo_id``; return the commit's URL.

    The shards go up byte for byte (nothing is re-read or re-encoded); the card's numbers
    are computed from them. ``license`` defaults to the one already on the repo's card
    (``other`` when none is known, and the card says so).

    Example:
        >>> push_output_dir("out/", "me/corpus-augmented", license="cc-by-sa-4.0")  # doctest: +SKIP
        'https://huggingface.co/datasets/me/corpus-augmented/commit/…'
    """
    import pyarrow.parquet as pq

    out = Path(output_dir)
    manifest = read_manifest(out)
    if not manifest.get("complete"):
        raise PushError(f"{out} holds an unfinished run: run its synthesize command again to finish it, then push")
    split = manifest["job"].get("split", "train")
    store = ShardStore(out, manifest["job"], split=split)
    shards = store.verify(repair=False)  # the verified ones; every shard the manifest counts must be among them
    expected = set(range(manifest.get("shards", 0)))
    bad = sorted(expected - set(shards))
    if bad:  # damaged (verify names why), or its sidecar is gone: never publish a run with a hole in it
        reasons = store.repaired + [f"shard {i}: its record {store.sidecar_path(i).relative_to(out)} is missing"
                                    for i in bad if not store.sidecar_path(i).exists()]
        raise PushError(f"{out}: shards {bad} are damaged ({'; '.join(reasons)}); run the synthesize command again "
                        "to regenerate them, then push")
    rows = sum(info.rows for info in shards.values())
    if set(shards) != expected or rows != manifest.get("rows"):
        raise PushError(f"{out}: its shards {sorted(shards)} hold {rows} rows, but its manifest records "
                        f"{len(expected)} shards and {manifest.get('rows')} rows; run the synthesize command with "
                        "--overwrite to make it again, then push")
    about = manifest.get("about", {})
    source = about.get("source", {})
    files = {info.file: (out / info.file, info.sha256) for _, info in sorted(shards.items())}
    data = DataStats.of(pq.read_table(path, columns=_stat_columns(path)) for path, _ in files.values())
    run_stats = SynthesisStats.from_dict(json.loads((out / "stats.json").read_text()))
    first = next(iter(files.values()))[0] if files else None
    return _push(repo_id, split=split, files=files, run_stats=run_stats, data_stats=data,
                 card_info={"generation": about.get("generation", {}), "license": license,
                            "source_dataset": source_dataset or source.get("hub_dataset"),
                            "source_revision": source.get("revision"), "hardware": about.get("hardware"),
                            "command": about.get("command"), "first_shard": first},
                 extra={f"{META_DIR.lstrip('.')}/{split}/manifest.json": (out / "manifest.json").read_bytes()},
                 token=token, private=private, revision=revision, max_files_per_commit=max_files_per_commit,
                 retries=retries, backoff_s=backoff_s, progress=progress, local_dir=out)


def push_augmented_to_hub(
    dataset,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str = "main",
    split: str = "train",
    max_shard_size: int = 500 * 2**20,
    max_files_per_commit: int = MAX_FILES_PER_COMMIT,
    stats: SynthesisStats | None = None,
    card_kwargs: dict | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> str:
    """Push an in-memory augmented ``dataset`` as ``split`` of ``repo_id``; return the commit's URL.

    The dataset is written as parquet shards of about ``max_shard_size`` bytes into a
    temporary folder (removed on every exit; one left by a killed push is removed by the
    next), then published as :func:`push_output_dir` does. The card's numbers come from
    the data; ``stats`` (the transform's counters) give only what the data cannot tell.
    ``card_kwargs``: ``license`` (required unless the repo's card has one), ``generation``,
    ``source_dataset``, ``source_revision``, ``hardware``.

    Example:
        >>> push_augmented_to_hub(ds, "me/wiki-augmented", stats=synth.stats,
        ...                       card_kwargs={"license": "cc-by-sa-4.0", "generation": synth.settings()})  # doctest: +SKIP
    """
    import math

    kwargs = dict(card_kwargs or {})
    if not kwargs.get("license"):
        raise PushError("the card needs a license: pass card_kwargs={'license': ...} (CLI: --license), e.g. the "
                        "source dataset's license")
    tmp = _scratch_dir()
    try:
        n = max(1, math.ceil(dataset.data.nbytes / max_shard_size))
        files = {}
        (tmp / "data").mkdir()
        for i in range(n):
            name = f"data/{split}-{i:05d}.parquet"
            dataset.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(tmp / name))
            files[name] = (tmp / name, sha256_file(tmp / name))
        data = DataStats.of(dataset.shard(num_shards=n, index=i, contiguous=True).data.table for i in range(n))
        return _push(repo_id, split=split, files=files, run_stats=stats or SynthesisStats(), data_stats=data,
                     card_info={**kwargs, "first_shard": tmp / f"data/{split}-00000.parquet"}, extra={},
                     token=token, private=private, revision=revision, max_files_per_commit=max_files_per_commit,
                     retries=retries, backoff_s=backoff_s, progress=progress, local_dir=None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _upload_bars(progress: bool):
    """huggingface_hub's own upload bars follow ``progress`` too, and are put back as they were."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = not progress and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet:
            enable_progress_bars()


def _push(repo_id: str, *, split: str, files: dict[str, tuple[Path, str]], run_stats: SynthesisStats,
          data_stats: DataStats, card_info: dict, extra: dict[str, bytes], token, private, revision,
          max_files_per_commit: int, retries: int, backoff_s: float, progress: bool, local_dir: Path | None) -> str:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from tqdm.auto import tqdm

    api = HfApi(token=token)
    secret = token or api.token or _cached_token()
    again = (f" Run `hf-instruct-synth push {local_dir} {repo_id}` again to resume it." if local_dir else
             " Run the same push again to resume it.")
    _retry(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
           "create the repo", secret, retries, backoff_s, again)
    remote = _remote_files(api, repo_id, revision, secret, retries, backoff_s, again)
    existing = _remote_text(api, repo_id, revision, "README.md", remote)
    _check_card(existing, repo_id)  # before any upload: a card we cannot read would fail the push at its end
    adds = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
            for name, (path, sha) in files.items() if remote.get(name) != sha]
    stale = [p for p in remote if p.startswith(f"data/{split}-") and p not in files]
    bar = tqdm(total=len(files), unit="shard", desc=f"Uploading {split}", disable=not progress)
    bar.update(len(files) - len(adds))
    with _upload_bars(progress):
        for i in range(0, len(adds), 16):  # blobs first, in groups: each group is kept if a later one fails
            group = adds[i:i + 16]
            _retry(lambda: api.preupload_lfs_files(repo_id, additions=group, repo_type="dataset", revision=revision),
                   "upload shards", secret, retries, backoff_s, again)
            bar.update(len(group))
    bar.close()
    # the card and the statistics: this split's numbers, the other splits' as published
    published = _remote_json(api, repo_id, revision, STATS_FILE, remote)
    published = {s: (v if "run" in v else {"run": v, "data": None}) for s, v in published.items()}
    published[split] = {"run": run_stats.to_dict(), "data": data_stats.__dict__}
    license_ = card_info.get("license") or _card_license(existing) or "other"
    card = make_dataset_card(
        repo_id,
        split_stats={s: SynthesisStats.from_dict(v["run"]) for s, v in published.items()},
        data_stats={s: DataStats(**v["data"]) if v.get("data") else _data_from_run(v["run"])
                    for s, v in published.items()},
        generation=card_info.get("generation") or {}, license=license_,
        source_dataset=card_info.get("source_dataset"), source_revision=card_info.get("source_revision"),
        hardware=card_info.get("hardware"), command=card_info.get("command"),
        columns=_columns(card_info.get("first_shard")), samples=_samples(card_info.get("first_shard")),
        dataset_info=_dataset_info(card_info.get("first_shard"), split, data_stats.rows,
                                   sum(p.stat().st_size for p, _ in files.values()), existing),
        existing=existing)
    final = [CommitOperationDelete(path_in_repo=p) for p in stale]
    final.append(CommitOperationAdd(path_in_repo=STATS_FILE,
                                    path_or_fileobj=json.dumps(published, indent=2, sort_keys=True).encode()))
    final += [CommitOperationAdd(path_in_repo=k, path_or_fileobj=v) for k, v in extra.items()]
    final.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode()))
    if len(adds) + len(final) <= max_files_per_commit:
        return _commit(api, repo_id, revision, adds + final, f"Publish {split}: {len(files)} shards, "
                       f"{len(adds)} new, {len(stale)} removed", secret, retries, backoff_s, again)
    print(f"warning: {len(adds) + len(final)} files exceed one commit ({max_files_per_commit}); committing in "
          "groups, so readers may see old and new shards together until the last commit", file=sys.stderr)
    for i in range(0, len(adds), max_files_per_commit):
        group = adds[i:i + max_files_per_commit]
        _commit(api, repo_id, revision, group, f"Add {split} shards ({len(group)})", secret, retries, backoff_s, again)
    return _commit(api, repo_id, revision, final, f"Publish {split}: card, statistics, {len(stale)} stale removed",
                   secret, retries, backoff_s, again)


def _stat_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return [c for c in ("instruction_response_pairs", "links") if c in names]


def _columns(first: Path | None) -> list[str] | None:
    import pyarrow.parquet as pq

    return pq.read_schema(first).names if first else None


def _samples(first: Path | None) -> list[dict]:
    import pyarrow.parquet as pq

    if not first:
        return []
    f = pq.ParquetFile(first)
    return f.read_row_group(0).slice(0, 2).to_pylist() if f.metadata.num_row_groups else []


def _dataset_info(first: Path | None, split: str, rows: int, nbytes: int, existing: str | None) -> dict | None:
    if not first:
        return None
    import pyarrow.parquet as pq
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo

    info = DatasetInfo(features=Features.from_arrow_schema(pq.read_schema(first)))
    splits = SplitDict()
    if existing:
        from huggingface_hub import DatasetCard

        info_old = DatasetCard(existing, ignore_metadata_errors=True).data.to_dict().get("dataset_info")
        listed = info_old.get("splits") if isinstance(info_old, dict) else None  # hand-edited: may be anything
        for s in listed if isinstance(listed, list) else []:
            if isinstance(s, dict) and isinstance(s.get("name"), str) and s["name"] != split:
                splits.add(SplitInfo(name=s["name"], num_examples=_count(s.get("num_examples")),
                                     num_bytes=_count(s.get("num_bytes"))))
    splits.add(SplitInfo(name=split, num_examples=rows, num_bytes=nbytes))
    info.splits = splits
    info.download_size = info.dataset_size = sum(s.num_bytes for s in splits.values())
    return info._to_yaml_dict()


def _count(value: Any) -> int:
    """A count from a hand-edited card: a non-negative int, else 0 (``"12 MB"``, ``None``, ``true``...)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _data_from_run(run: dict) -> DataStats:
    s = SynthesisStats.from_dict(run)
    return DataStats(rows=s.rows, texts=s.rows, pairs=s.pairs, rows_without_pairs=s.rows_without_pairs,
                     pairs_per_row=dict(s.pairs_per_row))


def _check_card(card: str | None, repo_id: str) -> None:
    """Refuse, before uploading anything, a card whose YAML header does not parse (we keep its keys)."""
    if not card:
        return
    import yaml
    from huggingface_hub import DatasetCard

    fix = "Fix it on the Hub (or remove the header) and push again; nothing was uploaded."
    try:
        DatasetCard(card, ignore_metadata_errors=True)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1} of its YAML header)" if where else ""
        raise PushError(f"the dataset card README.md of {repo_id} has a YAML header that does not parse{at}: "
                        f"{getattr(e, 'problem', None) or e}. {fix}") from None
    except ValueError as e:  # it parses, but to a list or a string: huggingface_hub wants ``key: value`` lines
        raise PushError(f"the dataset card README.md of {repo_id} has a YAML header that is not a mapping of "
                        f"`key: value` lines ({e}). {fix}") from None


def _card_license(card: str | None) -> str | None:
    if not card:
        return None
    from huggingface_hub import DatasetCard

    found = DatasetCard(card, ignore_metadata_errors=True).data.to_dict().get("license")
    return found if isinstance(found, str) else (found[0] if found else None)


def _commit(api, repo_id, revision, ops, message, secret, retries, backoff_s, again) -> str:
    info = _retry(lambda: api.create_commit(repo_id, operations=ops, commit_message=message, repo_type="dataset",
                                            revision=revision), "commit", secret, retries, backoff_s, again)
    return info.commit_url


def _remote_files(api, repo_id, revision, secret, retries, backoff_s, again) -> dict[str, str | None]:
    """Path -> LFS sha256 (or None for regular files) of what the repo holds."""
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    def listing():
        try:
            return list(api.list_repo_tree(repo_id, recursive=True, repo_type="dataset", revision=revision))
        except EntryNotFoundError:
            return []

    entries = _retry(listing, "list the repo", secret, retries, backoff_s, again)
    return {e.path: (e.lfs.sha256 if e.lfs else None) for e in entries if isinstance(e, RepoFile)}


def _remote_text(api, repo_id, revision, name, remote) -> str | None:
    if name not in remote:
        return None
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, name, repo_type="dataset", revision=revision, token=api.token)).read_text()


def _remote_json(api, repo_id, revision, name, remote) -> dict:
    text = _remote_text(api, repo_id, revision, name, remote)
    return json.loads(text) if text else {}


def _retry(fn, what: str, secret: str | None, retries: int, backoff_s: float, again: str = ""):
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(retries + 1):
        try:
            return fn()
        except (HfHubHTTPError, RuntimeError) as err:
            # huggingface_hub wraps a failed LFS upload in RuntimeError("Error while uploading …") from the HTTP error
            http = err if isinstance(err, HfHubHTTPError) else err.__cause__
            if not isinstance(http, HfHubHTTPError):
                raise
            detail = str(err) if http is err else f"{err} ({http})"
            status = http.response.status_code if getattr(http, "response", None) is not None else None
            if status in RETRY_STATUS and attempt < retries:
                wait = backoff_s * 2**attempt
                retry_after = http.response.headers.get("Retry-After") if http.response is not None else None
                if retry_after and retry_after.isdigit():
                    wait = max(wait, float(retry_after))
                time.sleep(min(wait, 60.0))
                continue
            raise PushError(_redact(f"could not {what} on {status or 'the Hub'}: {detail}.{again}", secret)) from None
        except (OSError, ConnectionError) as err:
            raise PushError(_redact(f"could not {what}: {type(err).__name__}: {err}.{again}", secret)) from None


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _scratch_dir() -> Path:
    """A private temporary folder for a push; those of pushes whose process is gone are removed first."""
    base = Path(tempfile.gettempdir()) / "hf-instruct-synth-push"
    base.mkdir(exist_ok=True)
    for old in base.glob("pid-*"):
        pid = int(old.name.split("-")[1]) if old.name.split("-")[1].isdigit() else 0
        if pid and not _alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"pid-{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cached_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001
        return None

