"""Checkpoints: safetensors tensors + one JSON metadata record in the same file.

Keeping the metadata inside the safetensors header means weights and their description can
never drift apart. A SHA-256 over the tensor bytes catches corruption that the safetensors
header check alone would not (flipped bytes inside a tensor). Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from xsensei.errors import CheckpointError
from xsensei.nn.model import CloudMaskModel

FORMAT = "xsensei-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "xsensei"

#: What the model expects as input; stored so that inference code can check it.
DEFAULT_INPUT_SPEC: dict[str, Any] = {
    "reflectance": "top-of-atmosphere reflectance as float, 0-1 (not DN, not percent)",
    "descriptor_encoding": "log10(wavelength_nm - 300) - 2 of [min, centre, max]",
    "thermal": "brightness temperature normalised (BT - BT_min) / (BT_max - BT_min)",
    "nodata": "NaN or all-band nodata value; excluded before the model runs",
}


#: ``inference["thermal_bands"]``: ``"use"`` (the default) or ``"ignore"``, for a model that
#: thermal bands make worse; the product then leaves them out before the model runs.
THERMAL_POLICIES = ("use", "ignore")


def thermal_policy(inference: Mapping[str, Any]) -> str:
    """A checkpoint's thermal-band policy (``"use"`` when it names none), validated."""
    policy = inference.get("thermal_bands", "use")
    if policy not in THERMAL_POLICIES:
        raise CheckpointError(f"inference['thermal_bands'] must be one of {THERMAL_POLICIES}, "
                              f"got {policy!r}")
    return str(policy)


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_model(
    model: CloudMaskModel,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    version: str = "0",
    trained: bool = False,
    provenance: Mapping[str, Any] | None = None,
    inference: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` to a safetensors file with its architecture and provenance.

    ``trained=False`` marks weights that must never be presented as a trained cloud mask.
    Refuses to replace an existing file unless ``overwrite=True``.
    """
    from xsensei import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    thermal_policy(inference or {})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or path.stem,
        "version": version,
        "xsensei_version": __version__,
        "trained": bool(trained),
        "architecture": model.config(),
        "input": DEFAULT_INPUT_SPEC,
        "inference": dict(inference or {}),
        "provenance": dict(provenance or {}),
        "sha256": tensor_digest(tensors),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    os.chmod(tmp, 0o644)  # safetensors creates files owner-only; checkpoints are meant to share
    os.replace(tmp, path)
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, validated for format; tensors are not read."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated or "
            "corrupted: re-copy or re-export it"
        ) from exc
    if raw is None:
        raise CheckpointError(
            f"{path} is a safetensors file without xsensei metadata; save it with "
            "xsensei.save_model so that its architecture and classes are known"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the xsensei metadata is not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}; this xsensei reads {FORMAT} v{FORMAT_VERSION}"
        )
    return meta


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot read tensors ({exc}); the file is damaged") from exc


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[CloudMaskModel, dict[str, Any]]:
    """Rebuild the model described by a checkpoint and load its weights strictly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    meta = read_metadata(path)
    tensors = _load_tensors(path)
    if tensor_digest(tensors) != meta.get("sha256"):
        raise CheckpointError(
            f"{path}: tensor checksum does not match the metadata; the file is corrupted"
        )
    try:
        model = CloudMaskModel.from_config(meta["architecture"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: architecture metadata is invalid ({exc})") from exc
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not match the stored architecture: {exc}"
        ) from exc
    model.eval().to(device)
    model.checkpoint_metadata = meta  # type: ignore[assignment]
    return model, meta


#: Short names for packaged models: ``"default"`` is what ``model=`` means when not given.
MODEL_ALIASES: dict[str, str] = {"default": "sensei-deeplab", "fast": "sensei-pixelnet"}


def packaged_models() -> dict[str, Path]:
    """Names of the weights shipped inside the package, mapped to their files."""
    root = resources.files("xsensei.weights")
    return {
        Path(str(entry)).stem: Path(str(entry))
        for entry in root.iterdir()
        if str(entry).endswith(".safetensors")
    }


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A packaged model name, or a path to a checkpoint file."""
    shipped = packaged_models()
    key = str(name_or_path)
    if key in MODEL_ALIASES:
        if MODEL_ALIASES[key] not in shipped:
            raise CheckpointError(
                f"model={key!r} means the packaged {MODEL_ALIASES[key]!r} weights, which this "
                "installation lacks (a source tree without them?): reinstall xsensei, or pass "
                "a .safetensors checkpoint written by xsensei.save_model"
            )
        key = MODEL_ALIASES[key]
    if key in shipped:
        return shipped[key]
    path = Path(name_or_path).expanduser()
    if path.suffix == ".safetensors" or path.exists() or os.sep in key:
        if not path.is_file():
            raise CheckpointError(f"no checkpoint file at {path}")
        return path
    aliases = [a for a, target in MODEL_ALIASES.items() if target in shipped]
    available = ", ".join(sorted(shipped) + aliases) or "none yet"
    raise CheckpointError(
        f"unknown model {key!r}: not a packaged model (available: {available}) and not a "
        "file path. Pass a path to a .safetensors checkpoint written by xsensei.save_model"
    )


def load_model(
    name_or_path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> CloudMaskModel:
    """Load a packaged model by name or a checkpoint by path, in eval mode."""
    model, _ = load_checkpoint(resolve_model_path(name_or_path), device=device)
    return model
