"""Devices, precision and the per-process model cache.

Dask tasks carry a small :class:`ModelRef`, never the weights: each worker process loads a
model once (lock-guarded) and keeps the band-set-specialised version for reuse.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from xsensei.engine.speedups import prepare_cpu_runner
from xsensei.errors import InputError
from xsensei.nn.model import CloudMaskModel


@dataclass(frozen=True)
class ModelRef:
    """What a task needs to find a model: a checkpoint path and its digest, or a memory key."""

    path: str | None
    digest: str
    name: str
    version: str


_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], CloudMaskModel] = {}
_RUNNERS: dict[tuple[Any, ...], torch.nn.Module] = {}
#: Models handed over as Python objects (threaded schedulers share this process).
_MEMORY: dict[str, CloudMaskModel] = {}
#: Counts real model loads in this process (tests check the cache works).
LOAD_COUNT = 0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` = cuda > mps > cpu; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device!r} asked for, but torch sees no CUDA GPU; use 'cpu'")
    return dev


def register_memory_model(model: CloudMaskModel) -> ModelRef:
    """Make an in-memory model reachable from tasks of this process (threaded schedulers).

    The key includes a digest of the weights: a model changed in place since an earlier call
    (a training loop that masks each epoch) gets a new key, so the runner cache, which holds
    SEnSeI folded for a band set, cannot serve the old weights.
    """
    from xsensei.weights.checkpoint import tensor_digest

    key = f"memory:{id(model):x}:{tensor_digest(model.state_dict())[:16]}"
    _MEMORY[key] = model
    meta = getattr(model, "checkpoint_metadata", None) or {}
    return ModelRef(None, key, meta.get("name", "custom"), str(meta.get("version", "0")))


_MALLOC_TUNED = False


@functools.cache
def _glibc() -> Any:
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name or "libc.so.6")
        return lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else None
    except OSError:  # musl or an unusual libc: leave the allocator alone
        return None


def tune_malloc() -> None:
    """Stop glibc from keeping freed model activations in its heaps (Linux only, once).

    glibc raises its mmap threshold after each large free (up to 32 MB), so the 10-100 MB
    activation buffers of later windows land in per-thread heaps that rarely shrink: a
    streamed job's RSS then grows with the number of chunks. A fixed threshold keeps large
    buffers in mmap, returned to the system on free. Set ``XSENSEI_TUNE_MALLOC=0`` to opt out.
    """
    global _MALLOC_TUNED
    import os

    if _MALLOC_TUNED or os.environ.get("XSENSEI_TUNE_MALLOC", "1") == "0":
        return
    _MALLOC_TUNED = True
    lib = _glibc()
    if lib is not None:
        lib.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB (fixed: no dynamic growth)


def release_memory() -> None:
    """Give freed heap memory back to the system after a block (glibc ``malloc_trim``)."""
    if _MALLOC_TUNED:
        lib = _glibc()
        if lib is not None:
            lib.malloc_trim(0)


def get_model(ref: ModelRef, device: torch.device) -> CloudMaskModel:
    """The model for ``ref`` on ``device``, loaded at most once per process."""
    global LOAD_COUNT
    key = (ref.digest, str(device))
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            if ref.path is None:
                try:
                    model = _MEMORY[ref.digest]
                except KeyError:
                    raise RuntimeError(
                        "this worker cannot see an in-memory model; on a distributed cluster "
                        "save it with xsensei.save_model and pass the file path as model="
                    ) from None
                model = model.to(device).eval()
            else:
                from xsensei.weights.checkpoint import load_checkpoint

                model, meta = load_checkpoint(Path(ref.path), device=device)
                if meta["sha256"] != ref.digest:
                    raise RuntimeError(f"{ref.path} changed on disk since the job was built")
                LOAD_COUNT += 1
            _MODELS[key] = model
    return model


def get_runner(
    ref: ModelRef,
    descriptors: NDArray[np.float32],
    device: torch.device,
    precision: str,
) -> torch.nn.Module:
    """The band-set-specialised model (SEnSeI folded into a 1x1 conv), cached per process.

    On CPU a convolutional network runs as a copy with its batch norms folded into the
    convolutions and in channels-last layout (:mod:`xsensei.engine.speedups`): the same
    probabilities to float rounding, faster; the model itself is never changed.
    """
    tune_malloc()
    key = (ref.digest, descriptors.tobytes(), descriptors.shape, str(device), precision)
    runner = _RUNNERS.get(key)
    if runner is None:
        model = get_model(ref, device)
        with _LOCK:
            runner = model.for_bands(torch.as_tensor(descriptors, device=device))
            if device.type == "cpu":
                runner = prepare_cpu_runner(runner)
            _RUNNERS[key] = runner
    return runner


#: ``precision=`` values of the inference functions.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _is_count(value: Any) -> bool:
    """A whole number >= 1 (bools are not counts)."""
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and value >= 1


def check_options(device: str | torch.device, precision: str, batch_size: int,
                  torch_threads: int | None) -> None:
    """Refuse bad inference options when the graph is built, not hours later in a task.

    The device string is only parsed: whether a GPU exists is the workers' business (a client
    without one may drive a GPU cluster), and :func:`resolve_device` checks it there.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device != "auto" and not isinstance(device, torch.device):
        try:
            torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise InputError(
                f"device must be 'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1' or "
                f"'mps', got {device!r}"
            ) from err
    if not _is_count(batch_size):
        raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if torch_threads is not None and not _is_count(torch_threads):
        raise InputError(
            f"torch_threads must be None (keep torch's setting) or a whole number >= 1, got "
            f"{torch_threads!r}")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """``auto``: bf16 (or fp16) autocast on GPUs, full fp32 on CPU for exact reproducibility."""
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return None
    if precision in ("bf16", "auto"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def input_multiple(module: torch.nn.Module) -> int:
    """The multiple that input sides must be for ``module`` (1 if it takes any size).

    segmentation-models-pytorch models refuse sides that are not a multiple of their
    encoder's output stride (8 for the default DeepLabv3+); other modules take any size.
    """
    for sub in module.modules():
        stride = getattr(getattr(sub, "encoder", None), "output_stride", None)
        if isinstance(stride, int) and stride > 1:
            return stride
    return 1


def run_batch(
    runner: torch.nn.Module,
    batch: NDArray[np.float32],
    device: torch.device,
    precision: str,
    multiple: int = 1,
) -> NDArray[np.float32]:
    """Softmax probabilities for a batch, under ``inference_mode`` (and autocast on GPU).

    Sides that are not a multiple of ``multiple`` are mirrored up to one on the bottom/right
    and the output cropped back: the result still depends on the batch's windows alone.
    """
    dtype = autocast_dtype(device, precision)
    h, w = batch.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        if getattr(runner, "channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        if dtype is None:
            logits = runner(x)
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                logits = runner(x)
        probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return probs[:, :, :h, :w] if pad_h or pad_w else probs


def set_torch_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (Nanny workers default to 1 via OMP_NUM_THREADS)."""
    if threads is not None and threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
