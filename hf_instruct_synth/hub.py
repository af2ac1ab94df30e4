"""Sharded, resumable push of an augmented dataset to the Hub, with its generated card.

Shards are ``data/{split}-{i:05d}-of-{n:05d}.parquet``. Before uploading, the repo is
listed: a shard whose LFS sha256 already matches is not sent again, so a push that
failed at any point is resumed by calling it again. Shards go up in groups, one commit
per group; 429 and 5xx answers are retried with backoff. The token is never printed.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from .stats import SynthesisStats

STATS_FILE = "synthesis_stats.json"
RETRY_STATUS = {429, 500, 502, 503, 504}


class PushError(RuntimeError):
    """A push failed; calling the same push again resumes it."""


def push_augmented_to_hub(
    dataset,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str = "main",
    split: str = "train",
    max_shard_size: int = 500 * 2**20,
    shards_per_commit: int = 4,
    stats: SynthesisStats | None = None,
    card: Any = None,
    card_kwargs: dict | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    progress: bool = True,
) -> str:
    """Push ``dataset`` as ``split`` of the dataset repo ``repo_id``; return the last commit's URL.

    ``stats`` (the transform's counters) feed the card; ``card`` replaces the generated
    card; ``card_kwargs`` go to :func:`~hf_instruct_synth.card.make_dataset_card`
    (``license`` is required there unless the repo's card has one).

    Example:
        >>> push_augmented_to_hub(ds, "me/wiki-augmented", stats=synth.stats,
        ...                       card_kwargs={"license": "cc-by-sa-4.0", "generation": {"model": "…"}})  # doctest: +SKIP
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from tqdm.auto import tqdm

    api = HfApi(token=token)
    secret = token or api.token or _cached_token()
    _retry(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
           "create the repo", secret, retries, backoff_s)
    remote = _remote_files(api, repo_id, revision, secret, retries, backoff_s)
    n = max(1, math.ceil(dataset.data.nbytes / max_shard_size))
    names = [f"data/{split}-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    stale = [p for p in remote if p.startswith(f"data/{split}-") and p not in names]
    bar = tqdm(total=n, unit="shard", desc=f"Pushing {split}", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="hf-instruct-synth-push-") as tmp:
        group: list = []
        for i, name in enumerate(names):
            local = Path(tmp) / name
            local.parent.mkdir(exist_ok=True)
            dataset.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(local))
            if remote.get(name) == _sha256(local):
                local.unlink()  # already on the Hub, byte for byte
                bar.update(1)
                continue
            group.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(local)))
            if len(group) == shards_per_commit or i == n - 1:
                _commit(api, repo_id, revision, group, f"Add {split} shards ({len(group)})", secret,
                              retries, backoff_s)
                for op in group:
                    Path(op.path_or_fileobj).unlink()
                bar.update(len(group))
                group = []
    bar.close()
    # Card and statistics: merge this split's counters with those already on the Hub.
    all_stats = _remote_stats(api, repo_id, revision, remote, secret)
    if stats is not None:
        all_stats[split] = stats.to_dict()
    splits = sorted({p.split("/")[1].split("-")[0] for p in list(remote) + names if p.startswith("data/")} | {split})
    ops = [CommitOperationDelete(path_in_repo=p) for p in stale]
    ops.append(CommitOperationAdd(path_in_repo=STATS_FILE,
                                  path_or_fileobj=json.dumps(all_stats, indent=2, sort_keys=True).encode()))
    if card is None:
        from .card import make_dataset_card

        kwargs = dict(card_kwargs or {})
        if "license" not in kwargs:
            raise PushError("the card needs a license: pass card_kwargs={'license': ...} "
                            "(CLI: --license), e.g. the source dataset's license")
        kwargs.setdefault("generation", {})
        kwargs.setdefault("columns", dataset.column_names)
        kwargs.setdefault("samples", [dataset[i] for i in range(min(2, len(dataset)))])
        card = make_dataset_card(
            repo_id, split_stats={s: SynthesisStats.from_dict(all_stats.get(s, {})) for s in splits}, **kwargs)
    ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode()))
    return _commit(api, repo_id, revision, ops, f"Update card and statistics ({split})", secret, retries, backoff_s)


def _commit(api, repo_id, revision, ops, message, secret, retries, backoff_s) -> str:
    info = _retry(lambda: api.create_commit(repo_id, operations=ops, commit_message=message, repo_type="dataset",
                                            revision=revision), message.lower(), secret, retries, backoff_s)
    return info.commit_url


def _remote_files(api, repo_id, revision, secret, retries, backoff_s) -> dict[str, str | None]:
    """Path -> LFS sha256 (or None for regular files) of what the repo holds."""
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    def listing():
        try:
            return list(api.list_repo_tree(repo_id, recursive=True, repo_type="dataset", revision=revision))
        except EntryNotFoundError:
            return []

    entries = _retry(listing, "list the repo", secret, retries, backoff_s)
    return {e.path: (e.lfs.sha256 if e.lfs else None) for e in entries if isinstance(e, RepoFile)}


def _remote_stats(api, repo_id, revision, remote, secret) -> dict[str, dict]:
    if STATS_FILE not in remote:
        return {}
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id, STATS_FILE, repo_type="dataset", revision=revision, token=api.token)
    return json.loads(Path(path).read_text())


def _retry(fn, what: str, secret: str | None, retries: int, backoff_s: float):
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(retries + 1):
        try:
            return fn()
        except HfHubHTTPError as err:
            status = err.response.status_code if getattr(err, "response", None) is not None else None
            if status in RETRY_STATUS and attempt < retries:
                wait = backoff_s * 2**attempt
                retry_after = err.response.headers.get("Retry-After") if err.response is not None else None
                if retry_after and retry_after.isdigit():
                    wait = max(wait, float(retry_after))
                time.sleep(min(wait, 60.0))
                continue
            raise PushError(_redact(f"could not {what} on {status or 'the Hub'}: {err}. "
                                    "Run the same push again to resume it.", secret)) from None


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001
        return None
