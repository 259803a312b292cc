"""Weight averages: an exponential moving average during training, and a uniform average of
finished checkpoints ("model soup").

Why: on a CPU budget the fast recipe is stopped after ~1-3k steps of a noisy optimisation, and
which checkpoint a run ends on moves real-scene F1 by 5-9 points from seed to seed (model card).
An average over the last few hundred steps is a flatter, less seed-dependent point than any
single step, at the cost of one extra copy of the weights and one ``lerp`` per step.

The average covers every floating-point parameter *and* buffer (batch-norm running statistics
included, so the averaged network is self-consistent); integer buffers (batch-norm step
counters) are copied. The rate warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
updates, so early validations do not see a network still dominated by its initial weights.

:func:`average_checkpoints` averages runs that share an architecture and start from one
parent (e.g. one recipe with several seeds). Where such fine-tunes stay in one basin of the
loss, the mean of their weights can score like the ensemble of their predictions at the cost
of one model (Wortsman et al. 2022, "Model soups"); it is not guaranteed. Measured here, the
average of two seeds of the default's 3-D-tops fine-tune scored no better than the seeds' mean
(model card): validate an average as any other checkpoint.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from xsensei.errors import CheckpointError
from xsensei.weights.checkpoint import load_checkpoint, resolve_model_path, save_model

__all__ = ["WeightAverage", "average_checkpoints", "common_record"]


class WeightAverage:
    """An averaged copy of ``model`` (kept in eval mode, no gradients).

    ``update(model)`` after each optimiser step; ``average`` is the network to validate and
    save. ``state_dict`` / ``load_state_dict`` carry what a bit-exact resume needs besides the
    averaged weights themselves (the update count).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.average = copy.deepcopy(model).eval().requires_grad_(False)

    def rate(self) -> float:
        """Weight of the old average in the next update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        keep = self.rate()
        averaged = self.average.state_dict()
        current = model.state_dict()
        if averaged.keys() != current.keys():
            raise ValueError("the model's tensors differ from the averaged copy's")
        for name, avg in averaged.items():
            value = current[name].detach()
            if avg.is_floating_point():
                avg.lerp_(value.to(avg.dtype), 1.0 - keep)
            else:
                avg.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, int | float]:
        return {"decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, int | float]) -> None:
        if float(state["decay"]) != self.decay:
            raise ValueError(f"the run was averaged with decay {state['decay']}, not "
                             f"{self.decay}")
        self.updates = int(state["updates"])


def common_record(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What every record agrees on, entry by entry and into nested mappings: seeds of one
    recipe differ in their generator record's ``seed`` only, and the rest of that record (the
    generator's settings, which the benchmarks redraw scenes from) must survive the average."""
    common: dict[str, Any] = {}
    for key, value in records[0].items():
        others = [r.get(key) for r in records[1:]]
        if all(o == value for o in others):
            common[key] = value
        elif isinstance(value, Mapping) and all(isinstance(o, Mapping) for o in others):
            common[key] = common_record([value, *others])
    return common


def average_checkpoints(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    name: str | None = None,
    version: str = "0",
    overwrite: bool = False,
) -> Path:
    """Write the uniform average of two or more checkpoints (paths or packaged model names) of
    one architecture to ``out``.

    Every floating-point tensor (weights and batch-norm running statistics) becomes the mean of
    the inputs', computed in float64 and cast back; integer tensors (batch-norm step counters)
    are the first input's. The inputs must share architecture, tensor names and shapes, and
    inference settings; the output's provenance keeps what all inputs' provenances agree on
    (e.g. the training data, and the generator settings of seeds that differ in the generator
    seed only: :func:`common_record`) and lists each input (its SHA-256 and provenance).
    It is ``trained`` only if every input is.
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(paths)}")
    loaded = [load_checkpoint(resolve_model_path(path)) for path in paths]
    first_model, first_meta = loaded[0]
    states = [model.state_dict() for model, _ in loaded]
    first = states[0]
    first_shapes = {k: (v.dtype, tuple(v.shape)) for k, v in first.items()}
    for path, (_, meta), tensors in zip(paths[1:], loaded[1:], states[1:], strict=True):
        if meta["architecture"] != first_meta["architecture"]:
            raise CheckpointError(
                f"{path} has another architecture than {paths[0]}; only checkpoints of one "
                "architecture (fine-tunes of one network) can be averaged")
        if meta.get("inference", {}) != first_meta.get("inference", {}):
            raise CheckpointError(
                f"{path} has other inference settings ({meta.get('inference')}) than "
                f"{paths[0]} ({first_meta.get('inference')}); average runs of one recipe")
        shapes = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
        if shapes != first_shapes:
            raise CheckpointError(f"{path}: tensor names, dtypes or shapes differ from "
                                  f"{paths[0]}'s")
    averaged: dict[str, torch.Tensor] = {}
    for key, value in first.items():
        if value.is_floating_point():
            total = torch.zeros_like(value, dtype=torch.float64)
            for state in states:
                total += state[key].to(torch.float64)
            averaged[key] = (total / len(states)).to(value.dtype)
        else:
            averaged[key] = value.clone()
    first_model.load_state_dict(averaged, strict=True)
    # what every input agrees on (training data, generator, held-out sensors ...) stays at the
    # top, where tools such as the sensor-independence benchmark read it
    provenances = [meta.get("provenance") or {} for _, meta in loaded]
    provenance = common_record(
        [{k: v for k, v in p.items() if k != "weight_average"} for p in provenances])
    provenance |= {
        "weight_average": {
            "method": "uniform mean of the floating-point tensors; integer tensors from the "
                      "first input",
            "inputs": [
                {"path": str(path), "name": meta.get("name"), "version": meta.get("version"),
                 "sha256": meta.get("sha256"), "provenance": meta.get("provenance", {})}
                for path, (_, meta) in zip(paths, loaded, strict=True)
            ],
        }
    }
    return save_model(
        first_model, out, name=name, version=version,
        trained=all(bool(meta.get("trained")) for _, meta in loaded),
        provenance=provenance, inference=first_meta.get("inference", {}), overwrite=overwrite,
    )


def cmd_average(args: Any) -> int:
    if Path(args.out).exists() and not args.overwrite:  # the CLI's flag, not the keyword
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    path = average_checkpoints(args.checkpoints, args.out, name=args.name,
                               version=args.version, overwrite=args.overwrite)
    print(f"wrote {path}: the mean of {len(args.checkpoints)} checkpoints")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``xsensei average``."""
    p = subparsers.add_parser(
        "average", help="average the weights of checkpoints of one architecture (model soup)")
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                   help="two or more .safetensors checkpoints or packaged model names (e.g. "
                        "seeds of one recipe)")
    p.add_argument("--out", required=True, help="the averaged checkpoint to write")
    p.add_argument("--name", default=None, help="model name recorded in the file")
    p.add_argument("--version", default="0")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_average)
