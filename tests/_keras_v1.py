"""Test-only loader for the original SEnSeI v1 Keras HDF5 weights (GPL-3.0).

These weights are used to check that our port reproduces v1 numerically. They must never be
converted into, or shipped with, the xsensei package, which is why this loader lives under
tests/ and is the only code that needs h5py.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from xsensei.nn.heads import PretrainHeads
from xsensei.nn.sensei import SEnSeI

V1_WEIGHTS = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "models"
    / "sensei-v1"
    / "sensei-epoch043-loss0.198.hdf5"
)

# Keras block (sub-model / layer-name prefix) -> attribute path of the torch DenseBlock.
_BLOCKS = {
    ("SEnSeI", "DESCRIPTOR_BLOCK"): "sensei.descriptor_block",
    ("SEnSeI", "PERMUTED_DESCRIPTOR_BLOCK"): "sensei.permutation_block.stack",
    ("SEnSeI", "COMBINED_DESCRIPTOR_BLOCK"): "sensei.combined_block",
    ("SEnSeI-Recovery-Module", "RECOVERY/CANDIDATE_DESCRIPTOR_BLOCK"): "heads.candidate_embedding",
    ("SEnSeI-Recovery-Module", "RECOVERY/REAL_DESCRIPTOR_BLOCK"): "heads.real_embedding",
    ("SEnSeI-Recovery-Module", "RECOVERY/CANDIDATE_PREDICTION_BLOCK"): "heads.discriminator",
    ("SEnSeI-Recovery-Module", "RECOVERY/BAND_ESTIMATION_BLOCK"): "heads.estimator",
}

# e.g. "DESCRIPTOR_BLOCK/Conv-3/conv2d_3/kernel:0", "RECOVERY/X/GroupNorm-0/gamma:0"
_NAME = re.compile(
    r"^(?P<block>.+)/(?P<layer>Conv-(?:\d+|last|final)|GroupNorm-\d+)/"
    r"(?:conv2d(?:_\d+)?/)?(?P<kind>kernel|bias|gamma|beta):0$"
)


def _torch_name(block_path: str, layer: str, kind: str) -> str:
    """State-dict key (prefixed "sensei." or "heads.") for one Keras weight."""
    is_score_head = block_path.startswith("heads.") and block_path.endswith(
        ("discriminator", "estimator")
    )
    stack = f"{block_path}.stack" if is_score_head else block_path
    if layer == "Conv-final":
        if not is_score_head:
            raise KeyError(f"unexpected Conv-final in {block_path}")
        prefix = f"{block_path}.out"
    elif layer == "Conv-last":
        prefix = f"{stack}.final"
    elif layer.startswith("Conv-"):
        prefix = f"{stack}.layers.{int(layer[5:])}.linear"
    else:
        prefix = f"{stack}.layers.{int(layer[10:])}.norm"
    suffix = {"kernel": "weight", "gamma": "weight", "bias": "bias", "beta": "bias"}[kind]
    return f"{prefix}.{suffix}"


def read_keras_weights(path: Path = V1_WEIGHTS) -> dict[str, torch.Tensor]:
    """All model (not optimizer) weights of the HDF5 file, mapped to our state-dict names.

    Conv2D 1x1 kernels ``(1, 1, in, out)`` become Linear weights ``(out, in)``.
    """
    import h5py

    out: dict[str, torch.Tensor] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"]
        for model_name in root:
            group = root[model_name]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            for name in names:
                m = _NAME.match(name)
                if m is None:
                    raise KeyError(f"unrecognised Keras weight {model_name}/{name}")
                block = _BLOCKS[(model_name, m["block"])]
                array = torch.from_numpy(group[name][()])
                if m["kind"] == "kernel":
                    if array.ndim != 4 or array.shape[:2] != (1, 1):
                        raise ValueError(f"{name}: expected a 1x1 conv kernel, got {array.shape}")
                    array = array[0, 0].T.contiguous()
                key = _torch_name(block, m["layer"], m["kind"])
                if key in out:
                    raise KeyError(f"two Keras weights map to {key}")
                out[key] = array.float()
    return out


def load_v1(path: Path = V1_WEIGHTS) -> tuple[SEnSeI, PretrainHeads, dict[str, set[str]]]:
    """SEnSeI and heads with the v1 weights, plus the sets of unmapped names (should be empty).

    Returns ``{"missing": torch keys without a Keras tensor, "unexpected": Keras tensors
    without a torch key}``; shapes must match exactly for every mapped tensor.
    """
    sensei, heads = SEnSeI(), PretrainHeads()
    both = nn.ModuleDict({"sensei": sensei, "heads": heads})
    keras = read_keras_weights(path)
    state = both.state_dict()
    missing = set(state) - set(keras)
    unexpected = set(keras) - set(state)
    for key in set(state) & set(keras):
        if state[key].shape != keras[key].shape:
            raise ValueError(f"{key}: torch {tuple(state[key].shape)} vs Keras {keras[key].shape}")
    both.load_state_dict({k: v for k, v in keras.items() if k in state}, strict=False)
    return sensei.eval(), heads.eval(), {"missing": missing, "unexpected": unexpected}
