"""Shared fixtures: a tiny Mistral synthesizer and tokenizer built locally (no downloads)."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# doctests are collected from the package; these helpers are not modules to import as tests
collect_ignore = ["fake_vllm", "mutation.py", "hub_server.py"]
from hub_server import HubServer  # noqa: E402

# The Hub, brought to the tests: huggingface_hub and datasets read these at import time, so
# the server starts before either is imported. No test can reach the real Hub.
_ONE_PER_PROCESS = "_hf_instruct_synth_test_hub"  # pytest.main run twice in a process (mutmut) imports this twice:
if _ONE_PER_PROCESS in sys.modules:                # huggingface_hub keeps the first server's address, so keep it
    HUB, HF_HOME = sys.modules[_ONE_PER_PROCESS].server, sys.modules[_ONE_PER_PROCESS].hf_home
    if HUB.serve_here():  # a forked child (a mutant's run): its own server and state, and every client told so
        import datasets.config
        import huggingface_hub.constants as hub_constants
        from huggingface_hub import HfFileSystem

        hub_constants.ENDPOINT = HUB.endpoint
        hub_constants.HUGGINGFACE_CO_URL_TEMPLATE = HUB.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        datasets.config.HF_ENDPOINT = HUB.endpoint
        datasets.config.HUB_DATASETS_URL = HUB.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
        HfFileSystem.clear_instance_cache()
else:
    HUB, HF_HOME = HubServer().__enter__(), tempfile.mkdtemp(prefix="hf-home-")
    sys.modules[_ONE_PER_PROCESS] = type(sys)(_ONE_PER_PROCESS)
    sys.modules[_ONE_PER_PROCESS].server, sys.modules[_ONE_PER_PROCESS].hf_home = HUB, HF_HOME
# Each test process its own temporary folder: pushes clear the scratch folders of processes that are
# gone, and in a mutation run (parallel forked children, some with a mutated liveness check) one
# process must never clear another's. Made in the system's temporary folder every time (never
# nested: multiprocessing's socket paths must stay short), once per process.
_tmp = sys.modules[_ONE_PER_PROCESS]
if getattr(_tmp, "tmp_pid", None) != os.getpid():
    # the first test process's temp root, kept for every process it starts (subprocesses, spawned workers)
    root = os.environ.setdefault("HF_INSTRUCT_SYNTH_TEST_TMP_ROOT", tempfile.gettempdir())
    _tmp.tmp_pid, _tmp.tmp = os.getpid(), tempfile.mkdtemp(prefix=f"t{os.getpid()}-", dir=root)
    atexit.register(lambda pid=os.getpid(), path=_tmp.tmp: os.getpid() == pid  # not in a forked child
                    and shutil.rmtree(path, ignore_errors=True))
tempfile.tempdir = os.environ["TMPDIR"] = _tmp.tmp
os.environ.update(HF_ENDPOINT=HUB.endpoint, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                  HF_TOKEN="hf_test_token_do_not_log_0123456789", HF_HOME=HF_HOME)
os.environ.pop("HF_HUB_OFFLINE", None)
HUB.state.tokens[os.environ["HF_TOKEN"]] = "write"


@pytest.fixture
def hub():
    """The local Hub; failures a test injects never reach the next test."""
    yield HUB
    HUB.state.fail = {kind: [] for kind in HUB.state.fail}
    HUB.state.tokens = {os.environ["HF_TOKEN"]: "write"}
    HUB.state.upload_delay_s = 0.0

WORDS = ("the river city north water king queen castle ancient bridge built year people market trade "
         "mountain library scholar wrote letter harbour ship winter summer village church old new").split()


def skewed_texts(n: int, seed: int = 0, mean_words: float = 2.5, sigma: float = 1.0, cap: int = 300) -> list[str]:
    """Texts whose word counts follow a lognormal mix: many short, a long tail."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = min(cap, max(1, int(rng.lognormvariate(mean_words, sigma))))
        out.append(" ".join(rng.choice(WORDS) for _ in range(k)) + ".")
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from hf_instruct_synth.demo.tiny import make_tokenizer

    return make_tokenizer(skewed_texts(200, seed=1) * 3, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    from hf_instruct_synth.demo.tiny import make_mistral

    # A larger init spreads the logits: greedy choices are clear and some rows hit EOS early.
    return make_mistral(tiny_tokenizer, initializer_range=0.2, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    path = tmp_path_factory.mktemp("tiny-synth")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def per_row_generate(model, tokenizer, prompt_ids: list[int], max_new_tokens: int) -> str:
    """The model card's way: one unpadded row through ``generate``, greedy."""
    import torch
    from transformers import GenerationConfig

    ids = torch.tensor([prompt_ids], device=model.device)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
