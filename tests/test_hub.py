"""Publishing to a local Hub-protocol server through the real huggingface_hub client."""

from __future__ import annotations

import itertools
import os

import pytest
import yaml
from datasets import Dataset, load_dataset
from huggingface_hub import DatasetCard, HfApi

from hf_instruct_synth.hub import PushError, push_augmented_to_hub
from hf_instruct_synth.stats import SynthesisStats

_ids = itertools.count()
TOKEN = os.environ["HF_TOKEN"]


def _repo() -> str:
    return f"user/aug-{next(_ids)}"


def _augmented(n: int, tag: str = "r") -> Dataset:
    return Dataset.from_dict({
        "text": [f"{tag} text number {i}." for i in range(n)],
        "instruction_response_pairs": [[{"instruction": f"Which number is {tag}{i}?", "response": str(i)}] * (i % 3)
                                       for i in range(n)],
        "synthesizer_output": [f"<QUE> Which number? <ANS> {i} </END>" for i in range(n)],
    })


def _stats(ds: Dataset) -> SynthesisStats:
    pairs = [len(p) for p in ds["instruction_response_pairs"]]
    per_row: dict[str, int] = {}
    for k in pairs:
        per_row[str(k)] = per_row.get(str(k), 0) + 1
    return SynthesisStats(rows=len(ds), pairs=sum(pairs), rows_without_pairs=pairs.count(0), prompt_tokens=1234,
                          generated_tokens=5678, rows_truncated=2, duplicate_questions=3, wall_time_s=2.0,
                          pairs_per_row=per_row)


def _push(ds, repo, **kw):
    kw.setdefault("card_kwargs", {"license": "cc-by-4.0", "source_dataset": "user/raw",
                                  "generation": {"model": "instruction-pretrain/instruction-synthesizer",
                                                 "max_new_tokens": 400}})
    kw.setdefault("max_shard_size", 1500)
    kw.setdefault("shards_per_commit", 2)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("progress", False)
    return push_augmented_to_hub(ds, repo, stats=_stats(ds), **kw)


def _card_yaml(card: DatasetCard) -> dict:
    return yaml.safe_load(str(card).split("---")[1])


def test_round_trip_and_card(hub):
    repo, ds = _repo(), _augmented(60)
    _push(ds, repo)
    files = sorted(hub.state.repos[repo].files)
    shards = [f for f in files if f.startswith("data/train-")]
    assert len(shards) > 2 and "README.md" in files
    assert len(hub.state.commit_paths) >= 2  # one commit per group of shards, then the card
    back = load_dataset(repo)
    assert back["train"].to_list() == ds.to_list()  # same rows, same order
    card = DatasetCard.load(repo, repo_type="dataset")
    meta = _card_yaml(card)
    assert meta["license"] == "cc-by-4.0" and meta["task_categories"] == ["text-generation"]
    assert meta["tags"] == ["synthetic", "instruction-pretraining"] and meta["source_datasets"] == ["user/raw"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    body = card.text
    s = _stats(ds)
    assert f"| rows | {s.rows} |" in body and f"| pairs | {s.pairs} |" in body
    assert f"| rows without a pair | {s.rows_without_pairs} |" in body and "| truncated prompts | 2 |" in body
    assert "| duplicate questions removed | 3 |" in body and "| generated tokens | 5,678 |" in body
    assert f"| 0 | {s.pairs_per_row['0']} |" in body  # the distribution table
    assert "instruction-pretrain/instruction-synthesizer" in body and "Instruction Pre-Training" in body
    assert f'load_dataset("{repo}")' in body and "r text number 0." in body  # snippet and a sample row
    assert TOKEN not in str(card)
    assert any(TOKEN in h for h in hub.state.auth_headers)  # the token was used, never shown


def test_private_repo(hub):
    repo = _repo()
    _push(_augmented(5), repo, private=True)
    assert hub.state.repos[repo].private
    assert HfApi().dataset_info(repo).private is True


def test_second_push_adds_a_split(hub):
    repo = _repo()
    train, test = _augmented(30, "train"), _augmented(12, "test")
    _push(train, repo)
    _push(test, repo, split="test")
    back = load_dataset(repo)
    assert back["train"].to_list() == train.to_list() and back["test"].to_list() == test.to_list()
    card = DatasetCard.load(repo, repo_type="dataset")
    assert [f["split"] for f in _card_yaml(card)["configs"][0]["data_files"]] == ["test", "train"]
    assert "| rows | 12 | 30 | 42 |" in card.text  # both splits' real counters, and the total


def test_failed_commits_and_uploads_are_retried(hub):
    repo, ds = _repo(), _augmented(40)
    hub.state.fail["commit"] = [500, 503]
    hub.state.fail["upload"] = [500]
    _push(ds, repo)
    assert hub.state.fail["commit"] == [] and hub.state.fail["upload"] == []  # the failures happened
    assert load_dataset(repo)["train"].to_list() == ds.to_list()


def test_interrupted_push_resumes_with_every_row_once(hub):
    repo, ds = _repo(), _augmented(80)
    commits_before = len(hub.state.commit_paths)
    hub.state.fail["commit"] = [None, 500, 500]  # the first group lands, then the Hub fails
    with pytest.raises(PushError, match="Run the same push again") as err:
        _push(ds, repo, retries=1)
    assert TOKEN not in str(err.value)
    landed = [p for c in hub.state.commit_paths[commits_before:] for p in c]
    assert landed and all(p.startswith("data/train-") for p in landed)
    uploads_before = len(hub.state.uploads)
    resumed_from = len(hub.state.commit_paths)
    _push(ds, repo)
    resent = [p for c in hub.state.commit_paths[resumed_from:] for p in c]
    assert not set(resent) & set(landed)  # finished shards were not sent again
    all_shards = {p for p in hub.state.repos[repo].files if p.startswith("data/train-")}
    assert set(resent) | set(landed) >= all_shards
    new_uploads = hub.state.uploads[uploads_before:]
    # objects PUT before the failed commits are already stored: at most the resent shards go up again,
    # and never one that had landed
    assert len(new_uploads) <= len(resent)
    assert not set(new_uploads) & {hub.state.repos[repo].lfs[p] for p in landed}
    assert load_dataset(repo)["train"].to_list() == ds.to_list()


def test_smaller_re_push_removes_stale_shards(hub):
    repo = _repo()
    _push(_augmented(80), repo)
    small = _augmented(10)
    _push(small, repo)
    assert load_dataset(repo)["train"].to_list() == small.to_list()


def test_push_without_license_says_what_to_do(hub):
    with pytest.raises(PushError, match="needs a license"):
        push_augmented_to_hub(_augmented(3), _repo(), card_kwargs={}, progress=False)


def test_auth_error_is_not_retried_and_hides_the_token(hub):
    hub.state.fail["commit"] = [401]
    with pytest.raises(PushError) as err:
        _push(_augmented(3), _repo(), max_shard_size=10**9)
    assert "401" in str(err.value) and TOKEN not in str(err.value)
    assert hub.state.fail["commit"] == []
