"""Publishing to a local Hub-protocol server through the real huggingface_hub client."""

from __future__ import annotations

import json
import os
import uuid

import pytest
import yaml
from datasets import Dataset, load_dataset
from huggingface_hub import DatasetCard, HfApi

from hf_instruct_synth.card import BEGIN, END, PAPER, size_category
from hf_instruct_synth.hub import PushError, check_push_access, push_augmented_to_hub, push_output_dir
from hf_instruct_synth.stats import SynthesisStats

TOKEN = os.environ["HF_TOKEN"]


def _repo() -> str:
    return f"user/aug-{uuid.uuid4().hex[:12]}"  # unique even when the tests run twice in one process (mutmut)


def _augmented(n: int, tag: str | None = None) -> Dataset:
    tag = tag or uuid.uuid4().hex[:6]  # rows (and blobs) of their own: the server keeps every blob it was sent
    return Dataset.from_dict({
        "text": [f"{tag} text number {i}." for i in range(n)],
        "instruction_response_pairs": [[{"instruction": f"Which number is {tag}{i}?", "response": str(i)}] * (i % 3)
                                       for i in range(n)],
        "synthesizer_output": [f"<QUE> Which number? <ANS> {i} </END>" for i in range(n)],
    })


def _run_stats() -> SynthesisStats:
    """Counters only the run knows; rows and pairs deliberately wrong: the card must take those from the data."""
    return SynthesisStats(rows=999, pairs=999, prompt_tokens=1234, generated_tokens=5678, rows_truncated=2,
                          duplicate_questions=3, wall_time_s=2.0)


def _push(ds, repo, **kw):
    kw.setdefault("card_kwargs", {"license": "cc-by-4.0", "source_dataset": "user/raw",
                                  "generation": {"model": "instruction-pretrain/instruction-synthesizer",
                                                 "max_new_tokens": 400}})
    kw.setdefault("max_shard_size", 1500)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("progress", False)
    kw.setdefault("stats", _run_stats())
    return push_augmented_to_hub(ds, repo, **kw)


def _card_yaml(card: DatasetCard) -> dict:
    return yaml.safe_load(str(card).split("---")[1])


def _shard_sets(hub, repo: str) -> list[frozenset]:
    return [frozenset(p for p in snap if p.startswith("data/")) for snap in hub.state.snapshots if snap["repo"] == repo]


def test_round_trip_one_commit_and_card(hub):
    repo, ds = _repo(), _augmented(60, tag="r")
    commits = len(hub.state.commit_paths)
    _push(ds, repo)
    assert len(hub.state.commit_paths) == commits + 1  # shards, card, statistics: one commit
    files = sorted(hub.state.repos[repo].files)
    assert len([f for f in files if f.startswith("data/train-")]) > 2 and "README.md" in files
    assert load_dataset(repo)["train"].to_list() == ds.to_list()  # same rows, same order
    card = DatasetCard.load(repo, repo_type="dataset")
    meta = _card_yaml(card)
    assert meta["license"] == "cc-by-4.0" and meta["task_categories"] == ["text-generation"]
    assert set(meta["tags"]) == {"synthetic", "instruction-pretraining"} and meta["source_datasets"] == ["user/raw"]
    assert meta["size_categories"] == ["n<1K"] and meta["annotations_creators"] == ["machine-generated"]
    assert meta["pretty_name"] and meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 60
    assert [f["name"] for f in meta["dataset_info"]["features"]] == ds.column_names
    body = card.text
    pairs = [len(p) for p in ds["instruction_response_pairs"]]
    # computed from the data, not from the (wrong) run counters
    assert "| rows | 60 |" in body and f"| pairs | {sum(pairs)} |" in body
    assert f"| texts without a pair | {pairs.count(0)} |" in body and "| 999 |" not in body
    assert "| truncated prompts *(run)* | 2 |" in body and "| duplicate questions removed *(run)* | 3 |" in body
    assert f"| 0 | {pairs.count(0)} |" in body  # the distribution
    assert "](https://huggingface.co/instruction-pretrain/instruction-synthesizer)" in body and PAPER in body
    assert "@inproceedings{cheng2024instruction" in body  # the citation
    assert f'load_dataset("{repo}")' in body and "r text number 0." in body  # snippet and a sample row
    assert TOKEN not in str(card)
    assert any(TOKEN in h for h in hub.state.auth_headers)  # the token was used, never shown


def test_templates_in_the_data_are_shown_verbatim(hub):
    repo = _repo()
    ds = Dataset.from_dict({"text": ["Hello {{ name }} and {% if x %}yes{% endif %} ```code```"],
                            "instruction_response_pairs": [[{"instruction": "{{ q }}?", "response": "{% raw %}"}]],
                            "synthesizer_output": ["{# c #}"]})
    _push(ds, repo)
    text = DatasetCard.load(repo, repo_type="dataset").text
    for s in ("Hello {{ name }} and {% if x %}yes{% endif %}", "{{ q }}?", "{% raw %}", "{# c #}"):
        assert s in text


@pytest.mark.parametrize("rows, label", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (10**10, "10B<n<100B"),
                                         (10**11, "100B<n<1T"), (10**12, "n>1T")])
def test_size_categories_are_the_hubs(rows, label):
    assert size_category(rows) == label


def test_hand_written_card_survives_a_re_push(hub):
    repo = _repo()
    _push(_augmented(20), repo)
    api = HfApi()
    card = api.hf_hub_download(repo, "README.md", repo_type="dataset")
    text = open(card).read()
    text = text.replace(BEGIN, "## Our notes\n\nKeep this paragraph.\n\n" + BEGIN) + "\nAnd this footer.\n"
    text = text.replace("license: cc-by-4.0", "license: cc-by-4.0\nmaintainer_key: kept")
    api.upload_file(path_or_fileobj=text.encode(), path_in_repo="README.md", repo_id=repo, repo_type="dataset")
    _push(_augmented(30), repo)
    after = DatasetCard.load(repo, repo_type="dataset")
    assert "Keep this paragraph." in after.text and "And this footer." in after.text
    assert after.text.count(BEGIN) == 1 and after.text.count(END) == 1 and "| rows | 30 |" in after.text
    assert _card_yaml(after)["maintainer_key"] == "kept"


def _repo_with_card(card: bytes) -> str:
    """A new dataset repo holding only ``card`` as its README.md, as a maintainer wrote it."""
    repo = _repo()
    HfApi().create_repo(repo, repo_type="dataset")
    HfApi().upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id=repo, repo_type="dataset")
    return repo


def test_a_card_whose_yaml_does_not_parse_stops_the_push_before_any_upload(hub):
    repo, api = _repo_with_card(b"---\nlicense: [unclosed\n---\n\nOur card.\n"), HfApi()
    before, uploads = set(api.list_repo_files(repo, repo_type="dataset")), len(hub.state.uploads)
    with pytest.raises(PushError, match=rf"^the dataset card README.md of {repo} has a YAML header that does not "
                                        r"parse \(line 1.*nothing was uploaded"):
        _push(_augmented(20), repo)
    assert set(api.list_repo_files(repo, repo_type="dataset")) == before and len(hub.state.uploads) == uploads


@pytest.mark.parametrize("header", [b"- a list\n- of items\n", b"just a sentence\n"])
def test_a_card_whose_yaml_is_not_a_mapping_stops_the_push_before_any_upload(hub, header):
    repo = _repo_with_card(b"---\n" + header + b"---\n\nOur card.\n")
    uploads, commits = len(hub.state.uploads), len(hub.state.commit_paths)
    with pytest.raises(PushError, match=rf"^the dataset card README.md of {repo} has a YAML header that is not a "
                                        r"mapping of `key: value` lines \(.+\)\. Fix it on the Hub \(or remove the "
                                        r"header\) and push again; nothing was uploaded\.$"):
        _push(_augmented(20), repo)
    assert len(hub.state.uploads) == uploads and len(hub.state.commit_paths) == commits


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
    assert "| rows | 12 | 30 | 42 |" in card.text  # both splits' numbers, and the total
    info = _card_yaml(card)["dataset_info"]
    splits = {s["name"]: s for s in info["splits"]}
    assert {k: v["num_examples"] for k, v in splits.items()} == {"train": 30, "test": 12}
    files = hub.state.repos[repo].files
    for name in ("train", "test"):  # each split's bytes: its own shards', the earlier split's kept as published
        assert splits[name]["num_bytes"] == sum(len(b) for p, b in files.items() if p.startswith(f"data/{name}-"))
    assert info["download_size"] == info["dataset_size"] == sum(v["num_bytes"] for v in splits.values())


def test_5xx_and_429_are_retried_by_us(hub):
    repo = _repo()
    ds = _augmented(40)
    hub.state.fail["commit"] = [429, 503]
    hub.state.fail["upload"] = [500]
    hub.state.fail["create"] = [502]
    posts = sum(1 for m, p in hub.state.log if m == "POST" and "/commit/" in p)
    _push(ds, repo)
    assert hub.state.fail["commit"] == [] and hub.state.fail["upload"] == [] == hub.state.fail["create"]  # they happened
    assert sum(1 for m, p in hub.state.log if m == "POST" and "/commit/" in p) == posts + 3
    assert load_dataset(repo)["train"].to_list() == ds.to_list()


def test_429_retry_after_is_honoured(hub, monkeypatch):
    import hf_instruct_synth.hub as hub_module

    waits = []
    monkeypatch.setattr(hub_module.time, "sleep", waits.append)
    hub.state.fail["commit"] = [(429, {"Retry-After": "7"})]
    _push(_augmented(5), _repo(), max_shard_size=10**9)
    assert hub.state.fail["commit"] == [] and 7.0 in waits  # we waited as the Hub asked, then went on


@pytest.mark.parametrize("kind, what", [("create", "create the repo"), ("list", "list the repo"),
                                        ("commit", "commit")])
def test_each_hub_call_of_a_push_says_what_failed_how_to_resume_and_never_the_token(hub, kind, what, monkeypatch):
    import time

    monkeypatch.setattr(time, "sleep", lambda s: None)  # huggingface_hub retries GETs itself, with waits
    repo = _repo()
    hub.state.fail[kind] = [503] * 100
    with pytest.raises(PushError, match=rf"(?s)^could not {what} on 503: .*\(request had Bearer \*\*\*\).* Run the "
                                        r"same push again to resume it\.$") as err:
        _push(_augmented(5), repo, retries=1)
    assert TOKEN not in str(err.value)
    if kind != "list":  # POSTs: only our retries, one as asked
        assert len(hub.state.fail[kind]) == 98


def test_failed_push_resumes_without_sending_a_blob_twice(hub):
    repo, ds = _repo(), _augmented(80)
    hub.state.fail["commit"] = [500, 500]
    with pytest.raises(PushError, match=r" Run the same push again to resume it\.$") as err:
        _push(ds, repo, retries=1)
    assert TOKEN not in str(err.value) and "(request had Bearer ***)" in str(err.value)  # the echo, redacted
    assert not any(p.startswith("data/") for p in hub.state.repos[repo].files)  # readers saw nothing
    uploaded = set(hub.state.uploads)
    before = len(hub.state.uploads)
    _push(ds, repo)
    assert not set(hub.state.uploads[before:]) & uploaded  # blobs already stored are not sent again
    assert load_dataset(repo)["train"].to_list() == ds.to_list()


def test_an_upload_that_keeps_failing_stops_the_push_with_the_fix_and_the_rerun_sends_only_the_rest(hub, monkeypatch):
    """huggingface_hub gives up on a blob as ``RuntimeError("Error while uploading …")`` from the HTTP
    error: we retry it as any 5xx, then stop with the resume hint (it once escaped as a traceback)."""
    import time

    monkeypatch.setattr(time, "sleep", lambda s: None)  # huggingface_hub's own backoff and ours
    repo, ds = _repo(), _augmented(60)
    hub.state.fail["upload"] = [None] * 18 + [500] * 40  # absorbed by the retries: the push goes through
    _push(ds, repo, max_shard_size=200, retries=3)
    assert hub.state.fail["upload"] == [] and load_dataset(repo)["train"].to_list() == ds.to_list()
    repo, ds = _repo(), _augmented(60)  # new rows: no blob of them is on the Hub yet
    hub.state.fail["upload"] = [None] * 18 + [500] * 10_000  # from the 19th on, no blob goes up
    with pytest.raises(PushError, match=r"(?s)^could not upload shards on 500: Error while uploading 'data/train-000\d\d"
                                        r"\.parquet' to the Hub\. .* Run the same push again to resume it\.$"):
        _push(ds, repo, max_shard_size=200, retries=1)
    assert not any(p.startswith("data/") for p in hub.state.repos[repo].files)  # readers saw nothing
    hub.state.fail["upload"] = []
    before = list(hub.state.uploads)
    _push(ds, repo, max_shard_size=200)
    assert not set(hub.state.uploads[len(before):]) & set(before)  # what went up is not sent again
    assert load_dataset(repo)["train"].to_list() == ds.to_list()


def test_smaller_re_push_never_mixes_old_and_new_shards(hub):
    repo = _repo()
    big, small = _augmented(80, "old"), _augmented(10, "new")
    _push(big, repo)
    old = _shard_sets(hub, repo)[-1]
    _push(small, repo)
    sets = _shard_sets(hub, repo)
    new = sets[-1]
    assert old != new and all(s in (frozenset(), old, new) for s in sets)
    assert load_dataset(repo)["train"].to_list() == small.to_list()


def test_more_files_than_one_commit_holds_go_in_groups_with_the_card_last(hub, capsys):
    repo, ds = _repo(), _augmented(60, tag="r")
    commits = len(hub.state.commit_paths)
    _push(ds, repo, max_files_per_commit=3)
    new = hub.state.commit_paths[commits:]
    assert len(new) > 2 and "README.md" in new[-1] and all("README.md" not in c for c in new[:-1])
    assert "readers may see" in capsys.readouterr().err
    assert load_dataset(repo)["train"].to_list() == ds.to_list()
    files = len([p for p in hub.state.repos[repo].files if p.startswith("data/")]) + 2  # + statistics and card
    exact, commits = _repo(), len(hub.state.commit_paths)
    _push(ds, exact, max_files_per_commit=files)  # exactly as many files as one commit holds: one commit
    assert len(hub.state.commit_paths) == commits + 1 and "readers may see" not in capsys.readouterr().err


def test_counts_come_from_the_data_after_num_proc(hub, tiny_model_dir):
    from hf_instruct_synth import InstructionSynthesizer
    from hf_instruct_synth.testing import ScriptedEngine

    ds = Dataset.from_dict({"text": [f"Fact {i}: the river {i} flows." for i in range(12)]})
    synth = InstructionSynthesizer(model=str(tiny_model_dir), engine=ScriptedEngine(), max_new_tokens=64)
    out = ds.map(synth, batched=True, batch_size=3, num_proc=2)
    assert synth.stats.pairs == 0  # the parent's counters saw nothing: the workers did the work
    repo = _repo()
    _push(out, repo, stats=synth.stats)
    expected = sum(len(p) for p in out["instruction_response_pairs"])
    assert expected > 0 and f"| pairs | {expected} |" in DatasetCard.load(repo, repo_type="dataset").text


def test_push_without_license_says_what_to_do(hub):
    with pytest.raises(PushError) as err:
        push_augmented_to_hub(_augmented(3), _repo(), card_kwargs={}, progress=False)
    assert str(err.value) == ("the card needs a license: pass card_kwargs={'license': ...} (CLI: --license), e.g. the "
                              "source dataset's license")


def test_a_token_passed_in_is_the_one_used_whatever_the_environment_holds(hub, monkeypatch, tmp_path):
    other = "hf_passed_in_token_0000000000000000"
    hub.state.tokens[other] = "write"
    monkeypatch.setenv("HF_TOKEN", "hf_environment_token_the_hub_refuses_00")  # a stale token in the environment
    repo = _repo()
    assert check_push_access(repo, token=other) == "user"
    ds = _augmented(5)
    _push(ds, repo, token=other)
    assert load_dataset(repo, token=other)["train"].to_list() == ds.to_list()
    assert hub.state.auth_headers[-1] == f"Bearer {other}"
    with pytest.raises(PushError, match="rejected the token"):
        check_push_access(_repo())  # the environment's token, refused: so the passing above used ours


def test_push_defaults_are_public_on_main_with_progress_and_five_retries(hub):
    import inspect

    for fn in (push_augmented_to_hub, push_output_dir):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in ("private", "revision", "retries", "backoff_s", "progress")} == {
            "private": False, "revision": "main", "retries": 5, "backoff_s": 1.0, "progress": True}, fn.__name__
    repo = _repo()
    push_augmented_to_hub(_augmented(4), repo, card_kwargs={"license": "mit"}, progress=False)
    assert not hub.state.repos[repo].private
    with pytest.raises(PushError, match="could not commit on 404"):  # a branch that is not there: refused, said
        _push(_augmented(4), repo, revision="no-such-branch", retries=0)


def test_a_finished_push_leaves_no_scratch_folder(hub):
    import tempfile
    from pathlib import Path

    scratch = Path(tempfile.gettempdir()) / "hf-instruct-synth-push"
    _push(_augmented(20), _repo())
    assert not list(scratch.glob(f"pid-{os.getpid()}-*"))  # the shards written for the upload are removed


def test_auth_error_is_not_retried_and_hides_the_token(hub):
    hub.state.fail["commit"] = [401]
    with pytest.raises(PushError) as err:
        _push(_augmented(3), _repo(), max_shard_size=10**9)
    assert "401" in str(err.value) and TOKEN not in str(err.value)
    assert hub.state.fail["commit"] == []


def test_access_check_creates_the_dataset_repo_and_names_each_problem_with_its_fix(hub, monkeypatch):
    repo, private_repo = _repo(), _repo()
    assert check_push_access(repo) == "user"
    assert repo in hub.state.repos and not hub.state.repos[repo].private  # a dataset repo, made before generation
    assert check_push_access(repo) == "user"  # it exists already: fine
    assert check_push_access(private_repo, private=True) == "user" and hub.state.repos[private_repo].private
    org_repo = "org/" + _repo().split("/")[1]
    assert check_push_access(org_repo) == "user" and org_repo in hub.state.repos  # an organisation of the token's
    bare = _repo().split("/")[1]
    assert check_push_access(bare) == "user" and f"user/{bare}" in hub.state.repos  # no namespace: the user's
    hub.state.fail["create"] = [503]
    with_retry, waits = _repo(), []
    monkeypatch.setattr("hf_instruct_synth.hub.time.sleep", waits.append)
    assert check_push_access(with_retry) == "user" and with_retry in hub.state.repos  # creating is retried
    hub.state.fail["create"] = [503] * 6
    with pytest.raises(PushError, match=r"^could not create the repo on 503: ") as err:
        check_push_access(_repo())
    assert TOKEN not in str(err.value) and "(request had Bearer ***)" in str(err.value)  # the Hub's echo, redacted
    assert waits == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0] and hub.state.fail["create"] == []  # 5 retries, doubling

    def refused(repo_id: str, message: str, **kw) -> None:
        with pytest.raises(PushError) as err:
            check_push_access(repo_id, **kw)
        assert str(err.value) == message and TOKEN not in str(err.value)

    refused("someone-else/x", "user cannot write to someone-else/ (your namespaces: org, user); "
                              "pick a repo id in one of them")
    hub.state.fail["whoami"] = [502]
    refused(_repo(), "the Hub answered 502 when checking the token; try again later")
    hub.state.fail["whoami"] = [403]
    refused(_repo(), "the Hub rejected the token (HTTP 401): set a valid HF_TOKEN or run `hf auth login`, "
                     "then run the same command again")
    hub.state.tokens[TOKEN] = "read"
    refused(_repo(), "the token can only read: create one with write access (https://huggingface.co/settings/"
                     "tokens) and set HF_TOKEN, then run the same command again")
    hub.state.tokens.clear()
    refused(_repo(), "the Hub rejected the token (HTTP 401): set a valid HF_TOKEN or run `hf auth login`, "
                     "then run the same command again")
    refused(_repo(), "the Hub rejected the token (HTTP 401): set a valid HF_TOKEN or run `hf auth login`, "
                     "then run the same command again", token="hf_another_token_not_known_0000000")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", "http://127.0.0.1:9")
    refused(_repo(), "could not reach the Hub (ConnectError); check the network (or HF_ENDPOINT), or drop "
                     "--push-to-hub and publish later with `hf-instruct-synth push DIR REPO_ID`")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("hf_instruct_synth.hub._cached_token", lambda: None)
    refused(_repo(), "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access), "
                     "then run the same command again")
    assert not hub.state.model_repos  # every repo made was a dataset repo


def test_push_output_dir_uploads_the_run_shards_byte_for_byte(hub, tmp_path):
    from hf_instruct_synth import InstructionSynthesizer
    from hf_instruct_synth.run import synthesize_to_dir
    from hf_instruct_synth.testing import ScriptedEngine

    ds = Dataset.from_dict({"text": [f"The {i}th bridge spans the river." for i in range(9)]})
    out = tmp_path / "run"
    synthesize_to_dir(ds, InstructionSynthesizer(model="unused/name", engine=ScriptedEngine(), max_new_tokens=64),
                      out, shard_rows=4, progress=False, source="test")
    repo = _repo()
    push_output_dir(out, repo, license="mit", progress=False, backoff_s=0.01)
    files = hub.state.repos[repo].files
    local = sorted((out / "data").glob("*.parquet"))
    assert [f"data/{p.name}" for p in local] == sorted(p for p in files if p.startswith("data/"))
    for p in local:
        assert files[f"data/{p.name}"] == p.read_bytes()
    manifest = json.loads(files["hf-instruct-synth/train/manifest.json"])
    assert manifest["complete"] and manifest["job"]["rows"] == 9
    # a second push of the same run sends nothing and commits only the card, statistics and manifest
    before = len(hub.state.uploads)
    push_output_dir(out, repo, license="mit", progress=False)
    assert len(hub.state.uploads) == before
    assert sorted(hub.state.commit_paths[-1]) == ["README.md", "hf-instruct-synth/train/manifest.json",
                                                  "synthesis_stats.json"]
    hub.state.fail["commit"] = [500] * 2  # a failure says how to resume this folder's push
    with pytest.raises(PushError) as err:
        push_output_dir(out, repo, license="mit", progress=False, retries=1, backoff_s=0.01)
    assert str(err.value).endswith(f" Run `hf-instruct-synth push {out} {repo}` again to resume it.")
    assert TOKEN not in str(err.value) and "***" in str(err.value)  # the Hub's echo of the token: redacted


def test_push_output_dir_publishes_the_runs_split_and_the_card_says_how_it_was_made(hub, tmp_path, monkeypatch):
    """What the run recorded (split, settings, source and its commit, hardware, command) reaches the
    card of a pushed folder; ``private`` reaches the repo."""
    from hf_instruct_synth import InstructionSynthesizer
    from hf_instruct_synth.run import run_to_dir
    from hf_instruct_synth.testing import ScriptedEngine

    ds = Dataset.from_dict({"text": [f"The {i}th bridge spans the river." for i in range(7)]})
    out = tmp_path / "run"
    about = {"generation": {"model": "org/synth", "max_new_tokens": 64},
             "command": "hf-instruct-synth synthesize user/raw --split test",
             "source": {"hub_dataset": "user/raw", "revision": "a" * 40}}
    run_to_dir(ds, InstructionSynthesizer(model="unused/name", engine=ScriptedEngine(), max_new_tokens=64), out,
               split="test", shard_rows=4, progress=False, source="t", about=about)
    repo = _repo()
    monkeypatch.setenv("HF_TOKEN", "hf_stale_environment_token_000000000")  # the token passed in is the one used
    push_output_dir(out, repo, license="mit", progress=False, private=True, token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    stored = hub.state.repos[repo]
    assert stored.private
    assert sorted(stored.files) == ["README.md", "data/test-00000.parquet", "data/test-00001.parquet",
                                    "hf-instruct-synth/test/manifest.json", "synthesis_stats.json"]
    card = stored.files["README.md"].decode()
    for line in ["license: mit", "source_datasets:\n- user/raw", "  - split: test\n    path: data/test-*",
                 f"| source dataset | [user/raw](https://huggingface.co/datasets/user/raw) @ `{'a' * 40}` |",
                 "| synthesizer | [org/synth](https://huggingface.co/org/synth) |", "| max new tokens | 64 |",
                 "| hardware | CPU |", "```bash\nhf-instruct-synth synthesize user/raw --split test\n```",
                 "Columns: `text`, `instruction_response_pairs`, `synthesizer_output`, `augmented_texts`, "
                 "`template_modes`.", '"text": "The 0th bridge spans the river."', "| rows | 7 |",
                 "| texts | 7 |", "| pairs | 7 |", "| texts without a pair | 0 |"]:  # ScriptedEngine: 1 pair a row
        assert line in card, line
    assert load_dataset(repo, split="test").to_list() == Dataset.from_parquet(
        [str(p) for p in sorted((out / "data").glob("*.parquet"))]).to_list()
    rounds = tmp_path / "rounds"  # an M-shot run: rows are chains, texts and pairs are counted in their links
    run_to_dir(ds.select(range(6)), InstructionSynthesizer(model="unused/name", engine=ScriptedEngine()), rounds,
               shard_rows=4, progress=False, source="t6", rounds=2)
    push_output_dir(rounds, repo, progress=False)  # the license: the one already on the card
    card = stored.files["README.md"].decode()
    assert "| rows | 7 | 3 | 10 |" in card and "| texts | 7 | 6 | 13 |" in card and "| pairs | 7 | 6 | 13 |" in card
    assert "license: mit" in card
    unknown = _repo()  # no license given and none on the Hub: "other", and the card says to check the source
    push_output_dir(rounds, unknown, progress=False)
    card = hub.state.repos[unknown].files["README.md"].decode()
    assert "license: other" in card and "the source data's license was not known" in card
    assert not hub.state.repos[unknown].private  # public unless asked


def test_push_refuses_an_unfinished_or_damaged_run(hub, tmp_path):
    from hf_instruct_synth import InstructionSynthesizer
    from hf_instruct_synth.run import synthesize_to_dir
    from hf_instruct_synth.testing import ScriptedEngine

    ds = Dataset.from_dict({"text": [f"Text {i}." for i in range(6)]})
    out = tmp_path / "run"
    synthesize_to_dir(ds, InstructionSynthesizer(model="unused/name", engine=ScriptedEngine()), out, shard_rows=3,
                      progress=False, source="test")
    shard = out / "data" / "train-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(PushError, match=r"shards \[1\] are damaged \(.+\); run the synthesize command again to "
                                        r"regenerate them, then push$"):
        push_output_dir(out, _repo(), license="mit", progress=False)
    # a push only reads: nothing repaired, nothing removed (the rerun does that, under its lock)
    assert shard.exists() and (out / ".hf-instruct-synth" / "train-00001.json").exists()
    shard.unlink()
    (out / ".hf-instruct-synth" / "train-00001.json").unlink()
    # a lost or unreadable record: publishing the other shards would silently drop rows 3..5
    with pytest.raises(PushError, match=r"shards \[1\] are damaged \(shard 1: its record "
                                        r"\.hf-instruct-synth/train-00001\.json is missing\); run the synthesize"):
        push_output_dir(out, _repo(), license="mit", progress=False)
    (out / ".hf-instruct-synth" / "train-00001.json").write_text("{not json")
    with pytest.raises(PushError, match=r"shards \[1\] are damaged \(shard 1 \(data/train-00001\.parquet\): its "
                                        r"sidecar is unreadable \(JSONDecodeError\)\); run the synthesize"):
        push_output_dir(out, _repo(), license="mit", progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "rows": 5}))
    (out / ".hf-instruct-synth" / "train-00001.json").unlink()
    repo = _repo()
    synthesize_to_dir(ds, InstructionSynthesizer(model="unused/name", engine=ScriptedEngine()), out, shard_rows=3,
                      progress=False, source="test")  # the run made whole again
    (out / "manifest.json").write_text(json.dumps({**json.loads((out / "manifest.json").read_text()), "rows": 5}))
    with pytest.raises(PushError, match=r"its shards \[0, 1\] hold 6 rows, but its manifest records 2 shards and 5 "
                                        r"rows; run the synthesize command with --overwrite"):
        push_output_dir(out, repo, license="mit", progress=False)
    assert repo not in hub.state.repos or not any(p.startswith("data/") for p in hub.state.repos[repo].files)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PushError, match="unfinished run"):
        push_output_dir(out, _repo(), license="mit", progress=False)


def test_kill_9_mid_push_then_rerun(hub, tmp_path):
    """A push killed while uploading: readers saw nothing, the rerun completes without resending, and the
    killed process's temporary shards are removed by the next push."""
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    repo, ds = _repo(), _augmented(300)  # about 30 shards: uploads take seconds at the delay below
    ds.save_to_disk(tmp_path / "ds")
    scratch = Path(tempfile.gettempdir()) / "hf-instruct-synth-push"
    before = set(scratch.glob("pid-*")) if scratch.exists() else set()
    code = ("import sys; from datasets import load_from_disk; from hf_instruct_synth.hub import push_augmented_to_hub;"
            f"push_augmented_to_hub(load_from_disk({str(tmp_path / 'ds')!r}), {repo!r}, max_shard_size=1500,"
            "progress=False, card_kwargs={'license': 'mit'})")
    hub.state.upload_delay_s = 0.5  # the client uploads 5 blobs at a time: ~3 s for all of them
    uploads = len(hub.state.uploads)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    deadline = time.time() + 120
    while len(hub.state.uploads) < uploads + 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the push ended before it could be killed"
    assert not any(p.startswith("data/") for p in hub.state.repos[repo].files)  # no commit: readers saw nothing
    left = set(scratch.glob("pid-*")) - before
    assert left  # the killed process could not clean up
    hub.state.upload_delay_s = 0.0
    stored = set(hub.state.uploads)
    resumed_from = len(hub.state.uploads)
    _push(ds, repo, stats=None)
    assert not set(hub.state.uploads[resumed_from:]) & stored  # blobs that arrived before the kill: not resent
    assert load_dataset(repo)["train"].to_list() == ds.to_list()
    assert not any(p.exists() for p in left)  # the next push removed the dead process's folder


def test_a_hand_edited_dataset_info_of_another_shape_is_replaced_not_crashed_on(hub):
    repo = _repo_with_card(b"---\ndataset_info: 3\ntags: 5\n---\n\nOur card.\n")
    _push(_augmented(20), repo)
    card = DatasetCard.load(repo, repo_type="dataset")
    assert [s["name"] for s in _card_yaml(card)["dataset_info"]["splits"]] == ["train"]
    assert "Our card." in card.text


def _http_error(status: int, retry_after: str | None = None):
    """An HfHubHTTPError as huggingface_hub raises it, without a network (any version's HTTP library)."""
    from types import SimpleNamespace

    from huggingface_hub.errors import HfHubHTTPError

    err = HfHubHTTPError.__new__(HfHubHTTPError)
    Exception.__init__(err, f"{status} Client Error for url: https://hub/api/x?token={TOKEN}")
    err.response = SimpleNamespace(status_code=status, headers={"Retry-After": retry_after} if retry_after else {})
    return err


def test_retry_backs_off_doubling_takes_retry_after_when_longer_and_caps_at_a_minute(monkeypatch):
    import hf_instruct_synth.hub as hub_module

    waits: list[float] = []
    monkeypatch.setattr(hub_module.time, "sleep", waits.append)

    def failing(*errors):
        seq = list(errors)

        def fn():
            if seq:
                raise seq.pop(0)
            return "ok"
        return fn

    fn = failing(_http_error(503), _http_error(502), _http_error(429, "7"), _http_error(429, "1"),
                 _http_error(429, "soon"), _http_error(500))
    assert hub_module._retry(fn, "commit", TOKEN, retries=6, backoff_s=0.5) == "ok"
    assert waits == [0.5, 1.0, 7.0, 4.0, 8.0, 16.0]  # doubling; Retry-After only when longer and a number
    waits.clear()
    assert hub_module._retry(failing(_http_error(503), _http_error(429, "3600")), "commit", TOKEN, retries=2,
                             backoff_s=100.0) == "ok"
    assert waits == [60.0, 60.0]  # never more than a minute a wait


def test_retry_gives_up_with_what_failed_the_status_and_no_token(monkeypatch):
    import hf_instruct_synth.hub as hub_module

    monkeypatch.setattr(hub_module.time, "sleep", lambda s: None)
    calls = []

    def fn_raising(err):
        def fn():
            calls.append(1)
            raise err
        return fn

    with pytest.raises(PushError) as info:  # not a status worth retrying: at once
        hub_module._retry(fn_raising(_http_error(404)), "list files", TOKEN, retries=5, backoff_s=1.0, again=" Again.")
    assert len(calls) == 1
    assert str(info.value).startswith("could not list files on 404: 404 Client Error") and str(info.value).endswith(
        "token=***. Again.")
    calls.clear()
    with pytest.raises(PushError, match=r"^could not commit on 503: .*token=\*\*\*\.$"):  # retries spent
        hub_module._retry(fn_raising(_http_error(503)), "commit", TOKEN, retries=2, backoff_s=1.0)
    assert len(calls) == 3
    with pytest.raises(PushError, match=rf"^could not commit: ConnectionError: refused {TOKEN[:3]}\*\*\*\. Again\.$"):
        hub_module._retry(fn_raising(ConnectionError(f"refused {TOKEN[:3]}{TOKEN}")), "commit", TOKEN, retries=2,
                          backoff_s=1.0, again=" Again.")
    no_answer = _http_error(500)
    no_answer.response = None  # an error without a response: said as "the Hub"
    with pytest.raises(PushError, match=r"^could not commit on the Hub: 500 Client Error"):
        hub_module._retry(fn_raising(no_answer), "commit", TOKEN, retries=2, backoff_s=1.0)
    with pytest.raises(RuntimeError, match="^a bug of ours$"):  # not an HTTP failure: never dressed up as one
        hub_module._retry(fn_raising(RuntimeError("a bug of ours")), "commit", TOKEN, retries=2, backoff_s=1.0)
    assert hub_module._redact(f"a {TOKEN} b {TOKEN}", TOKEN) == "a *** b ***"
    assert hub_module._redact("nothing secret", None) == "nothing secret"


def test_a_push_clears_only_scratch_folders_of_processes_that_are_gone(tmp_path, monkeypatch):
    """Two pushes at once on one machine: neither may delete the other's shards mid-upload."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import hf_instruct_synth.hub as hub_module

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    base = tmp_path / "hf-instruct-synth-push"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folders = {name: base / name for name in (f"pid-{gone}-a", f"pid-{live.pid}-b", f"pid-{os.getpid()}-c",
                                                  "pid-x-d", "pid-0-e")}
        for folder in folders.values():
            folder.mkdir(parents=True)
            (folder / "train-00000.parquet").write_bytes(b"shard")
        assert hub_module._alive(live.pid) and hub_module._alive(os.getpid()) and not hub_module._alive(int(gone))
        mine = hub_module._scratch_dir()
    finally:
        live.kill()
        live.wait()
    assert mine.parent == base and mine.name.startswith(f"pid-{os.getpid()}-") and mine.is_dir()
    assert list(mine.iterdir()) == []  # a fresh, empty folder
    assert {p.name for p in base.iterdir()} == {mine.name} | set(folders) - {f"pid-{gone}-a"}
    assert all((f / "train-00000.parquet").exists() for n, f in folders.items() if n != f"pid-{gone}-a")

    def not_ours(pid, sig):  # another user's live process: we may not signal it, and it is alive
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(hub_module.os, "kill", not_ours)
    assert hub_module._alive(12345)


def test_a_split_published_by_an_older_version_keeps_its_numbers_from_its_run_counters(hub):
    """Older versions published ``synthesis_stats.json`` as bare run counters per split (no data
    counts): a new split's push keeps that split's numbers in the card and the file."""
    repo = _repo()
    HfApi(token=TOKEN).create_repo(repo, repo_type="dataset")
    old = SynthesisStats(rows=12, pairs=20, rows_without_pairs=2, pairs_per_row={"0": 2, "2": 10},
                         generated_tokens=77)
    HfApi(token=TOKEN).upload_file(path_or_fileobj=json.dumps({"test": old.to_dict()}).encode(),
                                   path_in_repo="synthesis_stats.json", repo_id=repo, repo_type="dataset")
    ds = _augmented(30)
    _push(ds, repo)
    stats = json.loads(hub.state.repos[repo].files["synthesis_stats.json"])
    assert stats["test"] == {"run": old.to_dict(), "data": None}  # kept as it was, in the new shape
    assert stats["train"]["data"]["rows"] == 30
    card = DatasetCard.load(repo, repo_type="dataset").text
    assert "| rows | 12 | 30 | 42 |" in card  # the old split's rows from its run counters, and the total
    pairs_new = sum(len(p) for p in ds["instruction_response_pairs"])
    assert f"| pairs | 20 | {pairs_new} | {20 + pairs_new} |" in card
    counts = [len(p) for p in ds["instruction_response_pairs"]]
    assert f"| texts without a pair | 2 | {counts.count(0)} | {2 + counts.count(0)} |" in card
    assert f"| 0 | {2 + counts.count(0)} |" in card and f"| 2 | {10 + counts.count(2)} |" in card  # histogram
    assert "| generated tokens *(run)* | 77 |" in card and "| texts | 12 | 30 | 42 |" in card


def test_hand_edited_split_counts_that_are_not_numbers_count_as_zero(hub):
    """Counts a maintainer typed by hand ("12 MB", none at all) never crash the push after its uploads."""
    repo = _repo_with_card(b"---\ndataset_info:\n  splits:\n  - name: test\n    num_bytes: 12 MB\n"
                           b"    num_examples: many\n  - name: dev\n    num_examples: 7\n  - 5\n  - name: 3\n---\n\nOurs.\n")
    _push(_augmented(20), repo)
    info = _card_yaml(DatasetCard.load(repo, repo_type="dataset"))["dataset_info"]
    splits = {s["name"]: s for s in info["splits"]}
    assert set(splits) == {"test", "dev", "train"}
    assert (splits["test"].get("num_bytes", 0), splits["test"].get("num_examples", 0)) == (0, 0)
    assert (splits["dev"].get("num_bytes", 0), splits["dev"]["num_examples"]) == (0, 7)
    assert splits["train"]["num_examples"] == 20 and info["dataset_size"] == splits["train"]["num_bytes"] > 0


def test_the_license_is_read_from_a_card_in_either_yaml_form():
    from hf_instruct_synth.hub import _card_license

    assert _card_license("---\nlicense: mit\n---\n\nx\n") == "mit"
    assert _card_license("---\nlicense:\n- apache-2.0\n- mit\n---\n\nx\n") == "apache-2.0"  # the first listed
    assert _card_license("---\nlicense: []\n---\n\nx\n") is None
    assert _card_license("---\npretty_name: x\n---\n\nx\n") is None and _card_license(None) is None
