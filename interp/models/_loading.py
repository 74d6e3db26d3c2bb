"""load_model: zoo name, local Hugging Face directory, or Hub id -> TransformerBridge."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from interp.models._zoo import ZOO, zoo_path

if TYPE_CHECKING:  # transformer-lens takes seconds to import: keep it lazy
    from transformer_lens.model_bridge import TransformerBridge

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


_PICKLE_EXTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class ModelLoadError(RuntimeError):
    """A model spec could not be turned into a model; the message says how to fix it."""


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "meta")


def resolve_device(device: str | torch.device | None) -> str:
    """The device a model is loaded on: ``None`` -> ``"cpu"``; ``"auto"`` -> CUDA if available,
    else Apple MPS, else the CPU; anything else as given (``"cuda:1"``), checked."""
    if device is None:
        return "cpu"
    text = str(device)
    if text == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    kind = text.split(":")[0]
    if kind not in _DEVICE_TYPES:
        raise ValueError(f"unknown device {text!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    if kind == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= n:
            raise ValueError(
                f"device {text!r} is not available: this machine has {n} CUDA device(s) "
                f"(torch {torch.__version__}{'' if torch.version.cuda else ', a CPU-only build'}). "
                "Use device='cpu' or 'auto', or install a CUDA build of torch.")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' is not available on this machine; use 'cpu' or 'auto'.")
    return text


def _check_hf_dir(path: Path) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ModelLoadError(
            f"{str(path)!r} is a directory but has no config.json, so it is not a model in "
            "Hugging Face format. Save one with `model.save_pretrained(dir)` and "
            "`tokenizer.save_pretrained(dir)`."
        )
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for ext in _PICKLE_EXTS for p in path.glob(f"*{ext}"))
        if pickles:
            raise ModelLoadError(
                f"{str(path)!r} holds only pickle weight files ({', '.join(pickles[:3])}); "
                "interp loads safetensors only, because unpickling a file can run arbitrary "
                "code. If you trust the source, convert once with transformers: "
                "`AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, "
                "safe_serialization=True)`."
            )
        raise ModelLoadError(f"{str(path)!r} has a config.json but no weights (*.safetensors).")
    try:
        json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{config} is not valid JSON: {e}") from None


def _hub_cached(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return isinstance(found, str)


def _hub_reachable(repo_id: str, timeout: float) -> tuple[bool, str]:
    """Ask the Hub (with a short timeout) whether the repo exists. Returns (ok, reason)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False, "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(repo_id, timeout=timeout)
        return True, ""
    except Exception as e:  # network refused, DNS failure, 404, gated repo...
        name = type(e).__name__
        msg = str(e).splitlines()[0] if str(e) else ""
        return False, f"{name}: {msg}"[:300]


def _boot(source: str, *, device: str, dtype: torch.dtype, trust_remote_code: bool, **kwargs: Any):
    from transformer_lens.model_bridge import TransformerBridge

    spec = kwargs.pop("_spec", None)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    bridge = TransformerBridge.boot_transformers(
        source, device=device, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs
    )
    bridge.eval()
    bridge._interp_spec = spec  # the load_model arguments, for interp.distributed workers
    return bridge


def load_model(
    spec: str | os.PathLike,
    *,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    hub_timeout: float = 4.0,
    **boot_kwargs: Any,
) -> TransformerBridge:
    """Load a model as a transformer-lens ``TransformerBridge``.

    ``spec`` is one of:

    * a zoo name (``interp.models.ZOO``: ``"induction"``, ``"ioi"``, ``"needle"``): the model
      shipped with this package, loaded through the same Hugging Face path as any other;
    * a local directory in Hugging Face format (``config.json`` + ``*.safetensors`` + tokenizer);
    * a Hub id (``"gpt2"``, ``"EleutherAI/pythia-70m"``): loaded from the local Hugging Face
      cache, or downloaded when the network allows.

    Weights are read with safetensors where the directory has them; ``trust_remote_code`` stays
    off unless asked for. Attention is eager (transformer-lens forces it) so patterns are real.

    ``device``: ``"cpu"`` (the default), ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"`` (the
    first of CUDA, MPS, CPU that is available). ``dtype``: ``"float32"`` (default),
    ``"bfloat16"``, ``"float16"``; every method computes its metrics and results in float32
    whatever the model's dtype. Other keyword arguments go to transformer-lens's
    ``TransformerBridge.boot_transformers``, e.g. ``device_map="auto"`` (or ``n_devices=2``) to
    spread a model over several GPUs, instead of ``device``.
    Raises ``ModelLoadError`` with a message that says how to get the weights when the spec
    cannot be resolved; offline with no cache this happens within ``hub_timeout`` seconds.
    """
    device_map = boot_kwargs.get("device_map")
    if device_map is not None and device is not None:
        raise ModelLoadError(
            f"pass either device={device!r} or device_map={device_map!r}, not both: device_map "
            "places the layers itself (e.g. device_map='auto' spreads them over the GPUs).")
    device = None if device_map is not None else resolve_device(device)
    torch_dtype = _resolve_dtype(dtype)
    kwargs = dict(device=device, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    kwargs.update(boot_kwargs)
    text = os.fspath(spec)
    # the arguments, recorded on the model: interp.distributed workers load the same model
    kwargs["_spec"] = {"spec": text, "device": device, "dtype": torch_dtype, "revision": revision,
                       "trust_remote_code": trust_remote_code, **boot_kwargs}
    if not text.strip():
        raise ModelLoadError(f"empty model spec; use a zoo name ({', '.join(ZOO)}), a directory or a Hub id")

    if text in ZOO:
        path = zoo_path(text)
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"zoo model {text!r} has no weights at {path}. Train it with "
                f"`python -m interp.models.train {text}`."
            )
        return _boot(str(path), **kwargs)

    path = Path(text).expanduser()
    if path.exists() or text.startswith((".", "/", "~")) or os.sep in text and not _HUB_ID.match(text):
        if not path.is_dir():
            raise ModelLoadError(f"model path {text!r} does not exist or is not a directory.")
        _check_hf_dir(path)
        return _boot(str(path.resolve()), **kwargs)

    if not _HUB_ID.match(text):
        raise ModelLoadError(
            f"unknown model {text!r}: not a zoo name ({', '.join(ZOO)}), not an existing directory, "
            "and not a valid Hugging Face Hub id (like 'gpt2' or 'EleutherAI/pythia-70m')."
        )

    if revision is not None:
        kwargs["revision"] = revision
    if _hub_cached(text, revision):
        # The cache has it: boot from the snapshot directory so the network is never touched.
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(text, revision=revision, local_files_only=True)
        except Exception as e:
            raise ModelLoadError(
                f"{text!r} is only partly in the local Hugging Face cache ({type(e).__name__}); "
                f"download it again with `huggingface-cli download {text}`."
            ) from None
        kwargs.pop("revision", None)
        _check_hf_dir(Path(local))
        return _boot(local, **kwargs)

    start = time.monotonic()
    ok, reason = _hub_reachable(text, timeout=hub_timeout)
    if not ok:
        raise ModelLoadError(
            f"cannot load {text!r}: it is not in the local Hugging Face cache and the Hub could not "
            f"be reached ({reason}; gave up after {time.monotonic() - start:.1f}s).\n"
            f"To fix: on a machine with network run `huggingface-cli download {text}` (or "
            f"`interp.load_model({text!r})` once) to fill the cache, copy the cache "
            "(~/.cache/huggingface/hub) here, or save the model with `save_pretrained(dir)` and "
            "pass that directory. Shipped models that need no download: "
            f"{', '.join(ZOO)}."
        )
    return _boot(text, **kwargs)


def as_model(model: Any) -> TransformerBridge:
    """The model a public entry point works on: a ``TransformerBridge`` as is; a string or path
    (zoo name, directory, Hub id) loaded with :func:`load_model`; anything else a TypeError."""
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    from transformer_lens.model_bridge import TransformerBridge

    if isinstance(model, TransformerBridge):
        return model
    raise TypeError(
        f"expected a model, got {type(model).__name__}: pass a TransformerBridge from "
        "interp.load_model(...), or a zoo name (e.g. 'ioi'), a model directory or a Hub id "
        "as a string."
    )
