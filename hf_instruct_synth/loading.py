"""Loading a model and tokenizer, choosing device/dtype/attention, and naming them cheaply."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

# Files whose content decides what a model folder computes; their digests name the folder.
_SAMPLE_BYTES = 1 << 16


def resolve_placement(device: str | None, dtype: str | None, attn: str | None,
                      rank: int | None) -> tuple[str, str, str]:
    """Pick ``(device, dtype, attn_implementation)``: forced values win, else the best available.

    GPU: ``cuda:{rank % device_count}`` (``cuda:0`` once the worker is pinned, see
    :func:`pin_worker_to_gpu`), bf16, ``flash_attention_2`` when transformers finds a working
    flash-attn, the dtype is fp16/bf16 and the GPU is Ampere or newer (else ``sdpa``). CPU:
    float32 and ``sdpa``.
    """
    import torch

    cuda = torch.cuda.is_available()
    if device is None:
        device = f"cuda:{(rank or 0) % torch.cuda.device_count()}" if cuda else "cpu"
    on_gpu = device.startswith("cuda")
    if on_gpu:  # before the first allocation: fewer fragmentation OOMs on varied batch shapes
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    else:
        torch.set_num_threads(cpu_threads())
    if dtype is None:
        dtype = "bfloat16" if on_gpu else "float32"
    if attn is None:
        attn = "flash_attention_2" if on_gpu and flash_attention_usable(device, dtype) else "sdpa"
    return device, dtype, attn


def cpu_threads() -> int:
    """Threads for a CPU run: one per core that is idle now (measured over 0.2 s), at least one.

    PyTorch's default, one thread per core, collapses when another process keeps a core busy:
    its threads wait for each other at every operation (measured: benchmarks/RESULTS.md).
    ``OMP_NUM_THREADS`` or ``HF_INSTRUCT_SYNTH_CPU_THREADS``, when set, win.

    Example:
        >>> cpu_threads() >= 1
        True
    """
    for name in ("HF_INSTRUCT_SYNTH_CPU_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name, "").strip().isdigit():
            return max(1, int(os.environ[name]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        import psutil

        busy = psutil.cpu_percent(interval=0.2, percpu=True)
        idle = sum(1 for b in busy if b < 50)
    except Exception:  # noqa: BLE001 - no measurement: every core
        idle = cores
    return max(1, min(cores, idle))


def flash_attention_usable(device: str, dtype: str) -> bool:
    """Whether flash-attention 2 can run here: transformers' own check (a build that imports against
    this torch), a half-precision dtype, and compute capability 8.0 or newer."""
    import torch

    if dtype not in ("bfloat16", "float16"):
        return False
    try:
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available():
            return False
    except ImportError:
        return False
    try:
        return torch.cuda.get_device_capability(device)[0] >= 8
    except (RuntimeError, AssertionError, ValueError):
        return False


def gpu_for_rank(rank: int, visible: str | None, count: int) -> str:
    """The GPU a worker of ``rank`` owns: an entry of ``CUDA_VISIBLE_DEVICES`` (or of ``0..count-1``).

    Example:
        >>> gpu_for_rank(1, "3,5", 2), gpu_for_rank(3, None, 2)
        ('5', '1')
    """
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    if not ids:
        raise ValueError("no GPU is visible (CUDA_VISIBLE_DEVICES is empty)")
    return ids[rank % len(ids)]


def pin_worker_to_gpu(rank: int | None) -> str | None:
    """In a worker process, before any CUDA call: show it only its own GPU (``CUDA_VISIBLE_DEVICES``).

    Then every library in the worker (vLLM, transformers' continuous batching, our engines)
    sees one GPU as ``cuda:0`` and sizes itself from that GPU. Returns the GPU id pinned, or
    ``None`` when there is nothing to pin (no rank, no GPU, or CUDA already initialised).
    """
    import torch

    if rank is None or not torch.cuda.is_available() or torch.cuda.is_initialized():
        return None
    gpu = gpu_for_rank(rank, os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count())
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


_WARNED: set[str] = set()


def load_model_and_tokenizer(model: Any, tokenizer: Any, *, revision: str | None, device: str,
                             dtype: str, attn_implementation: str):
    """Return ``(model, tokenizer)`` ready for generation, loading whatever was given by name.

    A model given by name is loaded straight onto ``device`` (``device_map``), never staged
    in host memory first. If flash-attention 2 fails to load (a build broken against this
    torch), it falls back to SDPA and says so once.
    """
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedModel

    if isinstance(model, PreTrainedModel):
        loaded = model
        if str(loaded.device) != device and not hasattr(loaded, "hf_device_map"):
            loaded = loaded.to(device)
    else:
        def load(attn: str):
            return AutoModelForCausalLM.from_pretrained(str(model), revision=revision, dtype=getattr(torch, dtype),
                                                        attn_implementation=attn, device_map=device)

        try:
            try:
                loaded = load(attn_implementation)
            except (ImportError, ValueError) as err:
                if attn_implementation != "flash_attention_2":
                    raise
                if "flash" not in _WARNED:
                    _WARNED.add("flash")
                    print(f"warning: flash_attention_2 could not be used ({str(err).splitlines()[0][:120]}); "
                          "using sdpa", file=__import__("sys").stderr)
                loaded = load("sdpa")
        except OSError as err:
            raise OSError(_unreachable(model, err)) from err
    loaded.eval()
    return loaded, load_tokenizer(model if not isinstance(model, PreTrainedModel) else loaded.name_or_path,
                                  tokenizer, revision=revision)


def load_tokenizer(model: Any, tokenizer: Any, *, revision: str | None):
    """The tokenizer given (an object, id or folder), else the one stored with ``model``."""
    from transformers import AutoTokenizer

    source = tokenizer if tokenizer is not None else model
    if isinstance(source, (str, os.PathLike)) and str(source):
        try:
            return AutoTokenizer.from_pretrained(str(source), revision=revision if tokenizer is None else None)
        except OSError as err:
            raise OSError(_unreachable(source, err, what="tokenizer")) from err
    if source is None or source == "" or not hasattr(source, "decode"):
        raise ValueError("a loaded model was given without a tokenizer: pass tokenizer=<id, path or object>")
    return source


def generation_config_eos(model: Any, revision: str | None) -> Any:
    """The EOS id(s) in a model's ``generation_config.json``, or ``None`` when it has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(model), revision=revision).eos_token_id
    except (OSError, ValueError):  # no such file, or not a name at all
        return None


def eos_token_ids(tokenizer, generation_eos: Any) -> list[int]:
    """Stop ids: the tokenizer's EOS, then any other EOS the model's generation config names."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for e in generation_eos if isinstance(generation_eos, list) else [generation_eos]:
        if e is not None and e not in eos:
            eos.append(e)
    if not eos:
        raise ValueError("the tokenizer has no eos_token; the synthesizer's outputs end with '</s>': set one")
    return eos


def _unreachable(name: Any, err: Exception, what: str = "model") -> str:
    return (f"could not load the {what} {str(name)!r}: {str(err).splitlines()[0] if str(err) else err!r}. "
            "Offline or no such repo? Use a local folder, or the bundled demo synthesizer "
            "(hf_instruct_synth.DEMO_MODEL; CLI: --model demo).")


def identity(obj: Any, revision: str | None = None) -> str:
    """A short, stable name for a model or tokenizer that costs no model load.

    - a local folder: a digest of its files' names, sizes and first/last 64 KiB;
    - a Hub id: the id and the revision asked for (``main`` by default); the run's manifest
      records the commit it resolved to (:func:`resolve_commit`);
    - a loaded model: its name, config and a sample of every weight tensor;
    - a loaded tokenizer: its name and full serialized vocabulary.
    """
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if path.is_dir():
            return "dir:" + _folder_digest(path)
        return f"hub:{obj}@{revision or 'main'}"  # never the cache's state: a name means the same before and after a download
    try:
        import torch
        from transformers import PreTrainedModel, PreTrainedTokenizerBase
    except ImportError:  # pragma: no cover - core dependencies
        return f"object:{type(obj).__qualname__}"
    h = hashlib.sha256()
    if isinstance(obj, PreTrainedModel):
        h.update(obj.config.to_json_string().encode())
        with torch.no_grad():
            for name, p in obj.state_dict().items():
                flat = p.detach().reshape(-1)
                sample = torch.cat([flat[:32], flat[-32:], flat[:: max(1, flat.numel() // 64)][:64]])
                h.update(name.encode())
                h.update(sample.float().cpu().numpy().tobytes())
        return f"model:{obj.name_or_path}:{h.hexdigest()[:24]}"
    if isinstance(obj, PreTrainedTokenizerBase):
        backend = getattr(obj, "backend_tokenizer", None)
        h.update(backend.to_str().encode() if backend is not None else repr(sorted(obj.get_vocab().items())).encode())
        h.update(repr(obj.special_tokens_map).encode())
        return f"tokenizer:{obj.name_or_path}:{h.hexdigest()[:24]}"
    return f"object:{type(obj).__qualname__}:{id(obj)}"


def _folder_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.relative_to(path)}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(_SAMPLE_BYTES))
            if size > _SAMPLE_BYTES:
                fh.seek(max(_SAMPLE_BYTES, size - _SAMPLE_BYTES))
                h.update(fh.read())
    return h.hexdigest()[:24]


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_commit(model: Any, revision: str | None) -> str | None:
    """The commit a Hub model name and revision point to, or ``None`` for folders, objects, or when unknown.

    A 40-hex revision is a commit already. Otherwise the local cache's ref is used when the
    model was downloaded before, else the Hub is asked (quickly: an offline machine gets
    ``None``, and loading then fails with its own clear error).

    Example:
        >>> resolve_commit("/no/such/folder/but/a/path", None) is None
        True
    """
    import re

    if not isinstance(model, (str, os.PathLike)) or Path(model).exists() or str(model).startswith(("/", ".")):
        return None
    name, rev = str(model), revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", rev):
        return rev
    from huggingface_hub.constants import HF_HUB_CACHE

    ref = Path(HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "refs" / rev
    if ref.is_file():
        return ref.read_text().strip()
    if hub_offline():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(name, revision=rev, timeout=10).sha
    except Exception:  # noqa: BLE001 - unknown here; loading names the real problem
        return None
