"""Supervised training of SEnSeI + a segmenter on synthetic scenes (and real patches, if any).

The shipped weights cannot be trained on the paper's labelled datasets (nothing may be
downloaded), so they are trained on :mod:`xsensei.training.synthetic` scenes and measured on
real imagery afterwards; real labelled data is used only for training when a user has it, never
for validation or model selection. What this module adds on top of the datasets:

- **band sets**: every sample gets its own bands (3..all of a held-in catalogue sensor, or 3..14
  made-up bands), so one batch mixes sensors and the model learns wavelengths, not band lists.
  Catalogue sensors named in ``holdout_sensors`` are never drawn, so scoring on them measures
  sensor independence on band sets the model has never seen;
- **validation**: fixed synthetic scenes (their own generator seed, so never trained on) seen
  through held-in sensors ("seen") and held-out sensors ("unseen"), all bands, identical scenes
  and labels for every sensor: the seen/unseen F1 gap is due to the bands alone. The best
  checkpoint is chosen on *seen* F1 so that the held-out sensors stay a clean test;
- **runs that survive interruption**: ``out_dir/last.safetensors`` (model, loadable with
  :func:`xsensei.load_model`) and ``out_dir/last.state.safetensors`` (optimizer, schedule, RNG,
  step; tensors + JSON, nothing unpickled) are written every ``checkpoint_every`` steps and when
  a time budget runs out; ``resume=True`` continues bit-for-bit on CPU, because every sample is a
  pure function of ``(seed, epoch, index)`` and every other random state is in the checkpoint.

Learning-rate schedule. The paper used SGD (lr 1e-3, momentum 0.99, Nesterov) and cut the lr
x0.25 on validation plateaus over ~100k+ GPU steps. A CPU budget buys 5-30k steps: plateaus are
then rarely detected before the run ends (validation is noisy and patience costs thousands of
steps), so the lr would stay high to the last step. ``schedule="cosine"`` (the default: linear
warm-up, then cosine decay to ``min_lr`` at ``steps``) anneals by construction within any step
budget, does not depend on noisy validation (so it is reproducible step for step), and keeps
the paper's optimizer. ``"plateau"`` (the paper's) and ``"constant"`` are available.

``xsensei train --config training/<recipe>.json --out DIR`` is registered by :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from xsensei._hardware import describe_hardware
from xsensei._warnings import warn_user
from xsensei.engine.dask import cloud_first_class
from xsensei.nn.model import (
    CLASS_FLAG_VALUES,
    CLASSES_4,
    CLOUD_CLASSES,
    CloudMaskModel,
    check_classes,
)
from xsensei.training._config import JsonConfig, tuplify
from xsensei.training.augment import Augment
from xsensei.training.averaging import WeightAverage
from xsensei.training.datasets import (
    PatchDataset,
    SyntheticDataset,
    collate_patches,
    segmentation_loss,
    target_lut,
)
from xsensei.training.distill import distillation_loss, load_teacher, teacher_logits
from xsensei.training.metrics import ConfusionMatrix, json_safe
from xsensei.training.patches import NODATA_LABEL
from xsensei.training.unreached_taps import zero_unreached_taps
from xsensei.weights.checkpoint import THERMAL_POLICIES, thermal_policy

__all__ = [
    "BandsetSampler",
    "LRSchedule",
    "TrainConfig",
    "TrainResult",
    "ValSet",
    "add_parser",
    "build_validation",
    "predict_valset",
    "recalibrate_batchnorm",
    "render_valset",
    "train",
    "validate",
]

SCHEDULES = ("cosine", "constant", "plateau")
OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("auto", "bf16", "fp32")

#: Files a run writes into its directory; ``overwrite`` removes exactly these, nothing else.
RUN_FILES = (
    "config.json",
    "log.jsonl",
    "last.safetensors",
    "last.state.safetensors",
    "best.safetensors",
)
#: Config fields that may change between a run and its resumption (they do not change what
#: is learnt, only how long and how it is run). ``steps`` changes the cosine horizon from the
#: resumed step on, which is allowed on purpose: it is how a finished run is extended.
RUN_CONTROL_FIELDS = frozenset(
    {"steps", "time_budget_s", "eval_every", "checkpoint_every", "log_every", "workers",
     "threads", "device", "name"}
)
_STATE_KEY = "xsensei-train-state"
_STATE_FORMAT = 1


# ------------------------------------------------------------------------------------- config
def _differences(a: Any, b: Any, where: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, a's value, b's value)`` wherever two plain configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in _differences(a.get(k), b.get(k), f"{where}.{k}" if where else k)]
    return [] if a == b else [(where, a, b)]


def _plain(value: Any) -> Any:
    """Tuples -> lists and mappings -> dicts, recursively, for JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Everything that defines a training run; ``to_json`` / ``from_json`` round-trip exactly.

    Model: ``segmenter`` (a name in :data:`~xsensei.nn.segmenters.SEGMENTERS`) with
    ``segmenter_kwargs`` (e.g. ``{"encoder_output_stride": 16}``), ``classes``, ``sensei``
    (:class:`SEnSeIConfig` overrides) and ``init_sensei`` (path of a pre-trained SEnSeI,
    fine-tuned here, not frozen) or ``init_model`` (a whole trained model, packaged name or
    checkpoint path, to fine-tune: its architecture and classes must match the recipe's; with
    ``init_partial`` its tensors are loaded by name into the recipe's model instead: every one
    must fit, and what it lacks, e.g. a new head, keeps its initialisation). ``train_only``:
    module paths (e.g. ``["segmenter.refine"]``) whose parameters alone are trained; every
    other module stays as loaded, batch-norm statistics included (eval mode). ``distill_from``
    (packaged name or checkpoint path): a frozen teacher that sees each sample without its
    thermal bands; the loss becomes
    ``(1 - distill_weight) * CE + distill_weight * KL(teacher || student)``
    (:mod:`xsensei.training.distill`). ``freeze_segmenter``: train SEnSeI only; the segmenter's
    weights and batch-norm statistics stay as loaded (it runs in eval mode), so inputs whose
    SEnSeI features do not change keep their answers exactly.

    Data: ``crop`` px square samples from ``synthetic`` (:class:`SyntheticConfig` overrides;
    ``size`` defaults to ``crop``) scenes of generator seed ``synthetic_seed``; band sets from
    :class:`BandsetSampler` (``sensor_prob``, ``bands``, ``random_bands``,
    ``random_thermal_prob``, ``random_mwir_prob``, ``sensors``, ``holdout_sensors``);
    ``augment`` = :class:`Augment` overrides, or None for none;
    ``patch_stores`` real labelled stores mixed in at ``real_fraction`` of the samples.

    Validation: ``val_scenes`` scenes of side ``val_size`` from generator seed ``val_seed``,
    seen through ``val_sensors`` (held-in) and ``val_unseen`` (held-out; default all of
    ``holdout_sensors``), every ``eval_every`` steps. ``precise_bn_batches`` > 0: before each
    validation and checkpoint, batch-norm statistics are recomputed over that many fixed
    training-like batches (:func:`recalibrate_batchnorm`) instead of the running averages.

    Optimisation: ``optimizer`` ("sgd" | "adamw"), ``lr``, ``momentum``, ``nesterov``,
    ``weight_decay``, ``schedule`` (see the module docstring), ``warmup_steps``, ``min_lr``,
    ``plateau_factor`` / ``plateau_patience`` (evaluations), ``grad_clip``, ``ema_decay``
    (None: off; else validation, ``best`` and ``last`` hold an exponential moving average of
    the weights, :class:`~xsensei.training.averaging.WeightAverage`), ``precision``
    ("bf16" autocast, on CPU too; "fp32"; "auto" = bf16 where the hardware computes it
    natively, see :func:`resolve_precision`).

    Run control: ``steps``, ``checkpoint_every``, ``log_every``, ``time_budget_s`` (stop
    cleanly, with a checkpoint, before this much wall time), ``workers`` (DataLoader),
    ``threads`` (torch intra-op threads; None leaves torch's default), ``device``, ``seed``.

    Inference settings written into every checkpoint: ``inference_window`` /
    ``inference_overlap``, and ``thermal_bands`` ("use" | "ignore": ``cloudmask()`` leaves
    thermal bands out for the model); None keeps ``init_model``'s policy, so a fine-tune of
    ``sensei-pixelnet`` still ignores them, and is "use" otherwise. Training and validation
    see thermal bands either way.
    """

    name: str = "xsensei-model"
    segmenter: str = "deeplabv3plus"
    segmenter_kwargs: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] = CLASSES_4
    sensei: Mapping[str, Any] = field(default_factory=dict)
    init_sensei: str | None = None
    init_model: str | None = None
    distill_from: str | None = None
    distill_weight: float = 0.5
    freeze_segmenter: bool = False
    init_partial: bool = False
    train_only: tuple[str, ...] = ()
    # data
    crop: int = 128
    batch: int = 8
    sensor_prob: float = 0.5
    bands: tuple[int, int | None] = (3, None)
    random_bands: tuple[int, int] = (3, 14)
    random_thermal_prob: float = 0.1
    random_mwir_prob: float = 0.0
    sensors: tuple[str, ...] | None = None
    holdout_sensors: tuple[str, ...] = (
        "landsat-4", "landsat-5", "landsat-7", "sentinel-3a-slstr", "sentinel-3b-slstr",
    )
    augment: Mapping[str, Any] | None = field(default_factory=dict)
    synthetic: Mapping[str, Any] = field(default_factory=dict)
    synthetic_seed: int = 0
    steps_per_epoch: int = 1000
    patch_stores: tuple[str, ...] = ()
    real_fraction: float = 0.5
    # validation
    val_scenes: int = 16
    val_size: int = 128
    val_seed: int = 1_000_003
    val_sensors: tuple[str, ...] = ("sentinel-2a", "landsat-8")
    val_unseen: tuple[str, ...] | None = None
    eval_every: int = 500
    precise_bn_batches: int = 0
    # optimisation
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 200
    min_lr: float = 2e-5
    plateau_factor: float = 0.25
    plateau_patience: int = 3
    grad_clip: float | None = None
    ema_decay: float | None = None
    precision: str = "auto"
    # run control
    steps: int = 10_000
    checkpoint_every: int = 500
    log_every: int = 10
    time_budget_s: float | None = None
    workers: int = 0
    threads: int | None = None
    device: str = "auto"
    seed: int = 0
    inference_window: int = 256
    inference_overlap: int = 64
    thermal_bands: str | None = None

    def __post_init__(self) -> None:
        from xsensei.nn.segmenters import SEGMENTERS

        # paths as users write them: one store as a str or Path, Path objects anywhere
        stores = self.patch_stores
        if isinstance(stores, str | os.PathLike):
            stores = (stores,)
        object.__setattr__(self, "patch_stores", tuple(os.fspath(p) for p in stores))
        for name in ("init_sensei", "init_model", "distill_from"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        for name in ("classes", "bands", "random_bands", "holdout_sensors", "val_sensors",
                     "patch_stores", "train_only"):
            object.__setattr__(self, name, tuplify(getattr(self, name)))
        for name in ("sensors", "val_unseen"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuplify(getattr(self, name)))
        object.__setattr__(self, "segmenter_kwargs", dict(self.segmenter_kwargs))
        object.__setattr__(self, "sensei", dict(self.sensei))
        object.__setattr__(self, "synthetic", dict(self.synthetic))
        if self.augment is not None:
            object.__setattr__(self, "augment", dict(self.augment))
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {sorted(SEGMENTERS)}, got "
                             f"{self.segmenter!r}")
        check_classes(self.classes)
        if self.init_sensei and self.init_model:
            raise ValueError("give init_sensei or init_model, not both: init_model already "
                             "holds a SEnSeI")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.thermal_bands is not None and self.thermal_bands not in THERMAL_POLICIES:
            raise ValueError(f"thermal_bands must be one of {THERMAL_POLICIES} or null (keep "
                             f"init_model's), got {self.thermal_bands!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("crop", "batch", "steps", "eval_every", "checkpoint_every", "log_every",
                     "steps_per_epoch", "val_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.segmenter.startswith("deeplabv3plus"):
            stride = int(self.segmenter_kwargs.get("encoder_output_stride", 8))
            for name in ("crop", "val_size"):
                if getattr(self, name) % stride:
                    raise ValueError(
                        f"{name} {getattr(self, name)} must be divisible by the DeepLabv3+ "
                        f"output stride {stride} (segmentation-models-pytorch requires it)"
                    )
        lo, hi = self.bands
        if lo < 1 or (hi is not None and hi < lo):
            raise ValueError(f"bands must be (min >= 1, max >= min or None), got {self.bands}")
        rlo, rhi = self.random_bands
        if not 1 <= rlo <= rhi:
            raise ValueError(f"random_bands must be (1 <= min <= max), got {self.random_bands}")
        probs = {"sensor_prob": self.sensor_prob, "real_fraction": self.real_fraction,
                 "random_thermal_prob": self.random_thermal_prob,
                 "random_mwir_prob": self.random_mwir_prob,
                 "distill_weight": self.distill_weight}
        bad = [k for k, v in probs.items() if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must lie in [0, 1], got "
                             f"{', '.join(str(probs[k]) for k in bad)}")
        from xsensei.sensors import get_sensor

        for name in ("sensors", "holdout_sensors", "val_sensors", "val_unseen"):
            for sensor in getattr(self, name) or ():
                get_sensor(sensor)  # a typo must fail here, not silently hold nothing out
        held = {_sensor_key(s) for s in self.holdout_sensors}
        leaked = [s for s in (*(self.sensors or ()), *self.val_sensors) if _sensor_key(s) in held]
        if leaked:
            raise ValueError(
                f"{leaked} are in holdout_sensors: a held-out sensor cannot be trained on or "
                "used as a 'seen' validation sensor"
            )
        if self.init_partial and not self.init_model:
            raise ValueError("init_partial loads init_model's tensors into the recipe's model; "
                             "give init_model")
        if self.train_only and (self.freeze_segmenter or self.precise_bn_batches):
            raise ValueError("train_only keeps every other module as loaded; it cannot be "
                             "combined with freeze_segmenter or precise_bn_batches")
        if self.freeze_segmenter and self.precise_bn_batches:
            raise ValueError("freeze_segmenter keeps the segmenter's batch-norm statistics as "
                             "loaded; set precise_bn_batches to 0")
        if self.ema_decay is not None:
            if not 0.0 < self.ema_decay < 1.0:
                raise ValueError(f"ema_decay must lie in (0, 1) or be None, got {self.ema_decay}")
            if self.precise_bn_batches:
                raise ValueError("ema_decay averages the batch-norm statistics with the weights; "
                                 "set precise_bn_batches to 0 (the two cannot be combined)")
        if self.precise_bn_batches < 0:
            raise ValueError(f"precise_bn_batches must be >= 0, got {self.precise_bn_batches}")
        if self.inference_overlap >= self.inference_window:
            raise ValueError("inference_overlap must be smaller than inference_window")

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not be ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if k not in names and not k.startswith("_"))
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known: {sorted(names)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------- band sets
def _sensor_key(name: str) -> str:
    """Canonical catalogue name for any alias ("L7", "LANDSAT_7" -> "landsat-7"), so that a
    store's or a user's spelling cannot slip a held-out sensor past the holdout."""
    from xsensei.sensors.catalogue import find_sensor, normalise_name

    info = find_sensor(name)
    return info.name if info is not None else normalise_name(name)


def _all_sensors() -> list[str]:
    from xsensei.sensors import list_sensors

    return list(list_sensors())


_BANDSET_CACHE: dict[str, Any] = {}


def _full_bandset(sensor: str) -> Any:
    """All bands of a catalogue sensor (cached per process: BandSet building reads curves)."""
    bs = _BANDSET_CACHE.get(sensor)
    if bs is None:
        from xsensei.training.synthetic import sensor_bandset

        bs = _BANDSET_CACHE[sensor] = sensor_bandset(sensor)
    return bs


@dataclass(frozen=True)
class BandsetSampler:
    """Draws the band set of one training sample (a callable for :class:`SyntheticDataset`).

    With probability ``sensor_prob`` a catalogue sensor from ``sensors`` (uniformly) and a
    random subset of ``bands`` = (min, max or None = all) of its bands; otherwise
    ``random_bands`` made-up bands (:func:`~xsensei.training.synthetic.random_bandset`).
    Real sensors teach real band combinations (and their official response curves); made-up
    bands keep SEnSeI from memorising a handful of band lists. ``sensors`` must already
    exclude the held-out sensors (:meth:`from_config` does that).
    """

    sensors: tuple[str, ...]
    sensor_prob: float = 0.5
    bands: tuple[int, int | None] = (3, None)
    random_bands: tuple[int, int] = (3, 14)
    random_mwir_prob: float = 0.0
    random_thermal_prob: float = 0.1

    @classmethod
    def from_config(cls, config: TrainConfig) -> BandsetSampler:
        held = {_sensor_key(s) for s in config.holdout_sensors}
        pool = config.sensors if config.sensors is not None else tuple(_all_sensors())
        sensors = tuple(s for s in pool if _sensor_key(s) not in held)
        if not sensors and config.sensor_prob > 0:
            raise ValueError("no catalogue sensor left to train on after the holdout")
        return cls(sensors, config.sensor_prob, config.bands, config.random_bands,
                   config.random_mwir_prob, config.random_thermal_prob)

    def draw(self, rng: np.random.Generator) -> tuple[str, Any]:
        """``(source, bandset)``: source is the sensor name or ``"random"``."""
        from xsensei.training.synthetic import random_bandset

        if self.sensors and rng.random() < self.sensor_prob:
            sensor = self.sensors[int(rng.integers(len(self.sensors)))]
            full = _full_bandset(sensor)
            n = len(full)
            lo, hi = self.bands
            hi = n if hi is None else min(hi, n)
            lo = min(lo, hi)
            k = int(rng.integers(lo, hi + 1))
            return sensor, full.subset(np.sort(rng.choice(n, size=k, replace=False)))
        lo, hi = self.random_bands
        return "random", random_bandset(rng, int(rng.integers(lo, hi + 1)),
                                        thermal_prob=self.random_thermal_prob,
                                        mwir_prob=self.random_mwir_prob)

    def __call__(self, rng: np.random.Generator) -> Any:
        return self.draw(rng)[1]


class _SyntheticTraining(SyntheticDataset):
    """:class:`SyntheticDataset` that also reports each sample's band-set source."""

    sampler: BandsetSampler

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = super().__getitem__(index)
        # the band set is the first draw of the sample's own stream, so redrawing it from a
        # fresh stream gives the same source without changing SyntheticDataset
        rng = np.random.default_rng([int(self.seed), int(self.epoch), int(index)])
        sample["source"] = self.sampler.draw(rng)[0]
        return sample


class TrainingData(Dataset[dict[str, Any]]):
    """The training samples of one epoch: synthetic, plus real patches if stores are given.

    Sample ``i`` of epoch ``e`` is real with probability ``real_fraction`` (decided by its own
    random stream), then a uniformly chosen patch with its own crop / bands / augmentation
    stream; otherwise synthetic scene ``e * len + i``. Pure in ``(seed, epoch, i)``.
    """

    def __init__(self, synthetic: _SyntheticTraining, real: Sequence[PatchDataset] = (),
                 real_fraction: float = 0.0, seed: int = 0) -> None:
        self.synthetic = synthetic
        self.real = list(real)
        self.real_sizes = np.cumsum([0, *(len(r) for r in self.real)])
        self.real_fraction = real_fraction if self.real_sizes[-1] > 0 else 0.0
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.synthetic.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.synthetic)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.real_fraction > 0:
            rng = np.random.default_rng([self.seed, self.epoch, int(index), 7])
            if rng.random() < self.real_fraction:
                j = int(rng.integers(self.real_sizes[-1]))
                k = int(np.searchsorted(self.real_sizes, j, side="right")) - 1
                ds = self.real[k]
                ds.set_epoch(self.epoch * len(self) + int(index))  # a fresh stream per draw
                sample = ds[j - int(self.real_sizes[k])]
                meta = ds.store.metadata(sample["index"])
                sample["source"] = f"real:{meta.get('sensor') or 'unknown'}"
                sample["index"] = -1 - int(sample["index"])
                return sample
        return self.synthetic[index]


def _collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    batch = collate_patches(samples)
    batch["source"] = [s.get("source", "?") for s in samples]
    return batch


# ----------------------------------------------------------------------------------- schedule
@dataclass
class LRSchedule:
    """Learning rate per step; the state (plateau only) is plain JSON for checkpoints.

    ``cosine``: linear warm-up over ``warmup_steps``, then cosine from ``base_lr`` to
    ``min_lr`` at ``total_steps``. ``constant``: warm-up, then ``base_lr``. ``plateau``:
    warm-up, then ``base_lr * factor^k`` (floored at ``min_lr``), ``k`` growing each time the
    validation loss has not improved for ``patience`` evaluations (the paper's schedule).
    """

    kind: str
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0
    factor: float = 0.25
    patience: int = 3
    reductions: int = 0
    best: float = math.inf
    bad_evals: int = 0

    def lr(self, step: int) -> float:
        """The learning rate of the update made at 0-based ``step``."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps - 1, 1)  # last update: min_lr
            t = min(max(step - self.warmup_steps, 0) / span, 1.0)
            return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        if self.kind == "plateau":
            return max(self.base_lr * self.factor**self.reductions, self.min_lr)
        return self.base_lr

    def observe(self, val_loss: float) -> None:
        """Feed one validation loss (only the plateau schedule uses it)."""
        if self.kind != "plateau" or not math.isfinite(val_loss):
            return
        if val_loss < self.best * (1 - 1e-4):
            self.best, self.bad_evals = val_loss, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            self.reductions += 1
            self.bad_evals = 0

    def state_dict(self) -> dict[str, Any]:
        return {"reductions": self.reductions,
                "best": None if math.isinf(self.best) else self.best,
                "bad_evals": self.bad_evals}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.reductions = int(state.get("reductions", 0))
        best = state.get("best")
        self.best = math.inf if best is None else float(best)
        self.bad_evals = int(state.get("bad_evals", 0))


# --------------------------------------------------------------------------------- validation
@dataclass
class ValSet:
    """One validation set: the same scenes seen through one band set."""

    group: str  # "seen" | "unseen" (or any label a caller groups scores by)
    sensor: str
    values: torch.Tensor  # (S, N, H, W) float32
    descriptors: torch.Tensor  # (N, 3) encoded
    labels: torch.Tensor  # (S, H, W) uint8 store label values


def _synthetic_config(config: TrainConfig, size: int) -> Any:
    from xsensei.training.synthetic import SyntheticConfig

    kwargs = {k: tuplify(v) for k, v in config.synthetic.items()}
    kwargs.setdefault("size", size)
    return SyntheticConfig(**kwargs)


def render_valset(generator: Any, scenes: Sequence[Any], bandset: Any, *, group: str,
                  sensor: str) -> ValSet:
    """``scenes`` (from ``generator.scene``) rendered through ``bandset``, ready for
    :func:`validate`; non-finite values become 0 as the engine's nodata fill does."""
    from xsensei.descriptors import encode_wavelengths

    samples = [generator.render(scene, bandset) for scene in scenes]
    values = np.stack([s.image for s in samples]).astype(np.float32)
    values[~np.isfinite(values)] = 0.0
    return ValSet(
        group=group,
        sensor=sensor,
        values=torch.from_numpy(values),
        descriptors=torch.from_numpy(
            encode_wavelengths(bandset.wavelengths_nm).astype(np.float32)),
        labels=torch.from_numpy(np.stack([s.label for s in samples]).astype(np.uint8)),
    )


def build_validation(config: TrainConfig) -> list[ValSet]:
    """Fixed validation scenes: ``val_scenes`` scenes of a generator seeded ``val_seed``
    (never trained on), each seen by every validation sensor with all its bands."""
    from xsensei.training.synthetic import SceneGenerator

    kwargs = dict(config.synthetic)
    kwargs["size"] = config.val_size
    gen = SceneGenerator(_synthetic_config(config.replace(synthetic=kwargs), config.val_size),
                         seed=config.val_seed)
    unseen = config.val_unseen if config.val_unseen is not None else config.holdout_sensors
    scenes = [gen.scene(i) for i in range(config.val_scenes)]
    return [render_valset(gen, scenes, _full_bandset(sensor), group=group, sensor=sensor)
            for group, sensors in (("seen", config.val_sensors), ("unseen", unseen))
            for sensor in sensors]


def _autocast(device: torch.device, precision: str) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def predict_valset(model: CloudMaskModel, vs: ValSet, *, batch: int = 8,
                   device: torch.device | str = "cpu", precision: str = "fp32"
                   ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """``(rows, logits, flags)`` per batch of ``vs``: float32 CPU logits and the mask values
    the product writes (0 clear, 1 thick, 2 thin, 3 shadow; classes decided by
    :func:`~xsensei.engine.dask.cloud_first_class`), in eval mode without gradients (the
    model's mode is restored afterwards)."""
    device = torch.device(device)
    to_flag = torch.tensor([CLASS_FLAG_VALUES[c] for c in model.classes], dtype=torch.uint8)
    cloud = tuple(c in CLOUD_CLASSES for c in model.classes)  # decided as the product does
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(vs.values), batch):
                rows = slice(i, min(i + batch, len(vs.values)))
                x = vs.values[rows].to(device)
                d = vs.descriptors.to(device).expand(x.shape[0], -1, -1)
                with _autocast(device, precision):
                    logits = model(x, d).float().cpu()
                probs = torch.softmax(logits, 1).transpose(0, 1).numpy()
                best = torch.from_numpy(cloud_first_class(probs, cloud).astype(np.int64))
                yield rows, logits, to_flag[best]
    finally:
        model.train(was_training)


def validate(model: CloudMaskModel, valsets: Sequence[ValSet], *, batch: int = 8,
             device: torch.device | str = "cpu", precision: str = "fp32") -> dict[str, Any]:
    """Cloud-vs-rest OA/BA/P/R/F1 per group ("seen", "unseen") and per sensor, plus the
    cross-entropy of the seen group (the plateau schedule's signal). Classes are decided as
    the product decides them (:func:`~xsensei.engine.dask.cloud_first_class`)."""
    lut = torch.as_tensor(target_lut(model.classes))
    groups: dict[str, ConfusionMatrix] = {}
    sensors: dict[str, dict[str, Any]] = {}
    loss_sum, loss_n = 0.0, 0
    for vs in valsets:
        cm = ConfusionMatrix()
        for rows, logits, flags in predict_valset(model, vs, batch=batch, device=device,
                                                  precision=precision):
            truth = vs.labels[rows]
            cm.update(truth, flags)
            if vs.group == "seen":
                target = lut[truth.long()]
                valid = int((target != NODATA_LABEL).sum())
                if valid:
                    loss_sum += float(segmentation_loss(logits, target, model.classes,
                                                        reduction="sum"))
                    loss_n += valid
        groups.setdefault(vs.group, ConfusionMatrix()).merge(cm)
        sensors[vs.sensor] = cm.scores()
    out: dict[str, Any] = {g: cm.scores() for g, cm in groups.items()}
    out["sensors"] = {s: {"F1": v["F1"], "OA": v["OA"]} for s, v in sensors.items()}
    out["val_loss"] = loss_sum / loss_n if loss_n else math.nan
    if "seen" in out and "unseen" in out:
        out["f1_gap"] = out["seen"]["F1"] - out["unseen"]["F1"]
    return out


def recalibrate_batchnorm(model: torch.nn.Module, batches: Iterable[Mapping[str, Any]], *,
                          device: torch.device | str = "cpu", precision: str = "fp32") -> int:
    """Set every batch-norm layer's running mean / variance to exact averages over ``batches``.

    Training keeps exponential averages (momentum 0.1) of the last ~10 batches; with batches
    that mix sensors, band counts and scenes those swing from step to step, and so did the
    validation and real-data scores (F1 76 -> 84 on a real scene from recalibrating one
    checkpoint). Weights are untouched and the torch RNG is left as it was (dropout runs
    under a forked RNG), so a run's trajectory and bit-exact resume do not change. Returns
    the number of batches used (0: the model has no batch norm).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    device = torch.device(device)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    used = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calls below
        model.train()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for batch in batches:
                with _autocast(device, precision):
                    model(batch["values"].to(device), batch["descriptors"].to(device),
                          batch["band_mask"].to(device))
                used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return used


def _precise_bn_config(config: TrainConfig) -> TrainConfig:
    """Where the fixed batches of :func:`recalibrate_batchnorm` come from: training-like
    samples (same band sets, crops and augmentations) from scenes never trained on nor
    validated on, generated in-process."""
    return config.replace(synthetic_seed=config.val_seed + 1, seed=config.seed + 1, workers=0)


# ---------------------------------------------------------------------------- checkpointing
def _optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor],
                                                                dict[str, Any]]:
    """Split an optimizer state dict into tensors (safetensors) and JSON (the rest)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value.detach().contiguous().cpu().clone()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_tensors(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
                            ) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("opt."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, extra in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


def _save_state(path: Path, *, step: int, opt: torch.optim.Optimizer, schedule: LRSchedule,
                extra: Mapping[str, Any], model: torch.nn.Module | None = None) -> None:
    """``model``: the raw training weights, stored when ``last.safetensors`` holds an average."""
    tensors, opt_meta = _optimizer_to_tensors(opt)
    if model is not None:
        for name, value in model.state_dict().items():
            tensors[f"model.{name}"] = value.detach().contiguous().cpu().clone()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta = {"format": _STATE_FORMAT, "step": step, "optimizer": opt_meta,
            "schedule": schedule.state_dict(), **extra}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={_STATE_KEY: json.dumps(json_safe(meta))})
    os.replace(tmp, path)


def _load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})[_STATE_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != _STATE_FORMAT:
        raise ValueError(f"{path}: unsupported training-state format {meta.get('format')!r}")
    return tensors, meta


# ------------------------------------------------------------------------------ provenance
def _source_digest(package: str) -> str:
    """SHA-256 of a package's .py sources: pins the exact generator code that made the data."""
    import importlib

    mod = importlib.import_module(package)
    root = Path(next(iter(mod.__path__)))
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _generator_info(config: TrainConfig) -> dict[str, Any]:
    cfg = _synthetic_config(config, config.crop)
    return {
        "module": "xsensei.training.synthetic",
        # the physics a recipe selects is the version of the data it draws (1.0 stays 1.0)
        "version": cfg.physics,
        "source_sha256": _source_digest("xsensei.training.synthetic"),
        "config": _plain(dataclasses.asdict(cfg)),
        "seed": config.synthetic_seed,
        "validation_seed": config.val_seed,
    }


# -------------------------------------------------------------------------------------- train
@dataclass
class TrainResult:
    """What a call to :func:`train` did. ``loss_history`` holds (step, loss) of this call."""

    out_dir: Path
    step: int
    steps: int
    stopped_by: str  # "steps" | "time_budget" | "stop_at"
    last_path: Path
    best_path: Path | None
    best_step: int | None
    best_metrics: dict[str, Any] | None
    final_metrics: dict[str, Any] | None
    loss_history: list[tuple[int, float]]
    wall_time_s: float
    total_wall_time_s: float
    sec_per_step: float
    data_share: float
    bandset_sources: dict[str, int]

    @property
    def completed(self) -> bool:
        return self.step >= self.steps


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` only where bf16 is native: a CUDA GPU that supports it, or a
    CPU with AVX-512 BF16 / AMX. Elsewhere (e.g. AVX2-only CPUs) PyTorch emulates bf16
    convolutions through slow reference kernels: DeepLabv3+ steps measured ~10x slower than
    fp32 on an AVX2 EPYC, while AVX-512 BF16 Xeons run them 1.3-2.7x faster than fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type != "cpu":
        return "fp32"
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return "bf16" if native else "fp32"


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _took_a_step(out: Path) -> bool:
    """Whether the run in ``out`` ever trained: a checkpoint, or a step in its log."""
    if any((out / n).exists() for n in RUN_FILES if n not in ("config.json", "log.jsonl")):
        return True
    log = out / "log.jsonl"
    if not log.is_file():
        return False
    with log.open() as lines:
        for line in lines:
            try:
                if json.loads(line).get("event") == "step":
                    return True
            except (json.JSONDecodeError, AttributeError):
                return True  # not a log we wrote: keep it
    return False


def _prepare_dir(out: Path, config: TrainConfig, resume: bool, overwrite: bool
                 ) -> TrainConfig:
    """Refuse to clobber a run; on resume, check the stored config is compatible."""
    stored = out / "config.json"
    if resume:
        if not (out / "last.state.safetensors").is_file() or not stored.is_file():
            raise FileNotFoundError(
                f"nothing to resume in {out}: no last.state.safetensors / config.json (start "
                "the run without resume)"
            )
        old = TrainConfig.from_json(stored)
        changed = [f.name for f in dataclasses.fields(TrainConfig)
                   if getattr(old, f.name) != getattr(config, f.name)
                   and f.name not in RUN_CONTROL_FIELDS]
        if changed:
            raise ValueError(
                f"cannot resume {out} with a different config: {changed} changed. Only "
                f"{sorted(RUN_CONTROL_FIELDS)} may differ; start a new run directory instead"
            )
        config.to_json(stored)  # a later --resume without --config picks the new run control
        return config
    if not _took_a_step(out):
        # a start that failed before its first step (a bad store path, init_model, crop...)
        # left only its config and log; nothing was learnt, so a corrected rerun may start
        for n in ("config.json", "log.jsonl"):
            (out / n).unlink(missing_ok=True)
    existing = [n for n in RUN_FILES if (out / n).exists()]
    if existing:
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a training run ({', '.join(existing)}); pass resume=True "
                "(--resume) to continue it or overwrite=True (--overwrite) to start again"
            )
        for n in existing:
            (out / n).unlink()
    out.mkdir(parents=True, exist_ok=True)
    config.to_json(stored)
    return config


def _thermal_policy(config: TrainConfig) -> str:
    """The checkpoints' thermal-band policy: the recipe's, else ``init_model``'s, else use."""
    if config.thermal_bands is not None:
        return config.thermal_bands
    if config.init_model:
        from xsensei.weights.checkpoint import read_metadata, resolve_model_path

        meta = read_metadata(resolve_model_path(config.init_model))
        return thermal_policy(meta.get("inference") or {})
    return "use"


def _init_from_model(config: TrainConfig) -> CloudMaskModel:
    from xsensei.weights.checkpoint import load_model

    model = load_model(config.init_model)  # type: ignore[arg-type]
    have = model.config()
    want = {
        "sensei": {**have["sensei"], **config.sensei},
        "segmenter": {"name": config.segmenter, "kwargs": dict(config.segmenter_kwargs)},
        "classes": list(config.classes),
    }
    if config.init_partial:
        return _init_partial(config, model, want)
    if _plain(have) != _plain(want):
        diffs = "; ".join(f"{key}: model {a!r}, recipe {b!r}"
                          for key, a, b in _differences(_plain(have), _plain(want)))
        raise ValueError(
            f"init_model {config.init_model} differs from the recipe ({diffs}): fine-tuning "
            "needs the same architecture and classes"
        )
    return model.train()


def _init_partial(config: TrainConfig, init: CloudMaskModel, want: dict[str, Any]
                  ) -> CloudMaskModel:
    """The recipe's model with every tensor of ``init`` loaded by name (see ``init_partial``)."""
    model = CloudMaskModel.from_config(want)
    if list(init.classes) != list(model.classes):
        raise ValueError(f"init_model {config.init_model} has classes {list(init.classes)}, "
                         f"the recipe {list(model.classes)}: they must match")
    target, loaded = model.state_dict(), init.state_dict()
    unused = [k for k in loaded if k not in target]
    misfit = [k for k, v in loaded.items()
              if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if unused or misfit:
        raise ValueError(
            f"init_model {config.init_model} does not fit the recipe's {want['segmenter']}: "
            f"tensors without a place {unused[:5]}, with another shape {misfit[:5]}; "
            "init_partial only adds modules, it never drops or reshapes loaded ones"
        )
    model.load_state_dict(loaded, strict=False)
    return model.train()


def _trained_modules(config: TrainConfig) -> tuple[str, ...]:
    """Module paths that alone train (empty: the whole model); ``freeze_segmenter`` is
    ``train_only=["sensei"]``."""
    return config.train_only or (("sensei",) if config.freeze_segmenter else ())


def _freeze_outside(model: torch.nn.Module, paths: Sequence[str]) -> list[torch.nn.Module]:
    """Freeze every parameter outside the modules at ``paths``; returns those modules."""
    subs = []
    for path in paths:
        try:
            subs.append(model.get_submodule(path))
        except AttributeError:
            raise ValueError(f"train_only: the model has no module {path!r}") from None
    model.requires_grad_(False)
    for sub in subs:
        sub.requires_grad_(True)
    return subs


def _train_mode_only(model: torch.nn.Module, subs: Sequence[torch.nn.Module]) -> None:
    """Eval mode for the frozen rest (its batch-norm statistics stay as loaded), train mode
    for ``subs``."""
    model.eval()
    for sub in subs:
        sub.train()


def _build_model(config: TrainConfig) -> CloudMaskModel:
    from xsensei.nn.sensei import SEnSeI, SEnSeIConfig

    if config.init_model:
        return _init_from_model(config)
    if config.init_sensei:
        from xsensei.training.pretrain import load_pretrained_sensei

        sensei = load_pretrained_sensei(config.init_sensei)
        have = sensei.config.to_dict()
        if _plain({**have, **config.sensei}) != _plain(have):
            raise ValueError(
                f"init_sensei {config.init_sensei} has SEnSeI architecture {have}, which the "
                f"config's 'sensei' overrides {dict(config.sensei)} contradict"
            )
    else:
        arch = {k: tuplify(v) for k, v in {**SEnSeIConfig().to_dict(), **config.sensei}.items()}
        sensei = SEnSeI(SEnSeIConfig.from_dict(arch))
    return CloudMaskModel(config.segmenter, classes=config.classes, sensei=sensei,
                          segmenter_kwargs=dict(config.segmenter_kwargs))


def _build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov and config.momentum > 0,
                           weight_decay=config.weight_decay)


def _training_data(config: TrainConfig) -> TrainingData:
    from xsensei.training.synthetic import SceneGenerator

    gen = SceneGenerator(_synthetic_config(config, config.crop), seed=config.synthetic_seed)
    augment = None if config.augment is None else Augment(
        **{k: tuplify(v) for k, v in config.augment.items()})
    sampler = BandsetSampler.from_config(config)
    synthetic = _SyntheticTraining(
        gen, config.steps_per_epoch * config.batch, bandsets=sampler, crop=config.crop,
        augment=augment, classes=config.classes, seed=config.seed,
    )
    synthetic.sampler = sampler
    real: list[PatchDataset] = []
    held = {_sensor_key(s) for s in config.holdout_sensors}
    for path in config.patch_stores:
        ds = PatchDataset(path, crop=config.crop, bands=config.bands, augment=augment,
                          classes=config.classes, seed=config.seed)
        if config.crop > min(ds.store.patch_size):
            raise ValueError(
                f"crop {config.crop} px is larger than the patches of {path} "
                f"({ds.store.patch_size[0]} x {ds.store.patch_size[1]} px): lower crop or "
                "build the store with bigger patches"
            )
        sensors = {i: str(ds.store.metadata(i).get("sensor") or "") for i in ds.indices}
        keep = [i for i in ds.indices if _sensor_key(sensors[i]) not in held]
        dropped = sorted({s for s in sensors.values() if _sensor_key(s) in held})
        if ds.indices and not keep:
            raise ValueError(
                f"patch store {path}: all {len(ds.indices)} patches are from held-out sensors "
                f"({', '.join(dropped)}); remove them from holdout_sensors to train on them"
            )
        if dropped:
            warn_user(f"patch store {path}: {len(ds.indices) - len(keep)} of "
                      f"{len(ds.indices)} patches are from held-out sensors "
                      f"({', '.join(dropped)}) and are left out")
        ds.indices = keep
        real.append(ds)
    return TrainingData(synthetic, real, config.real_fraction, config.seed)


def _batches(data: TrainingData, config: TrainConfig, start_step: int
             ) -> Iterator[dict[str, Any]]:
    """Batches from ``start_step`` on, epoch by epoch (a fresh DataLoader per epoch).

    Sequential indices: samples are already random scenes, and sequential order is what
    makes "batch k of epoch e" a fixed set of samples for resumption.
    """
    per_epoch = config.steps_per_epoch
    epoch, offset = divmod(start_step, per_epoch)
    b = config.batch
    while True:
        data.set_epoch(epoch)
        loader = DataLoader(
            data, batch_size=b, sampler=range(offset * b, per_epoch * b), drop_last=True,
            num_workers=config.workers, collate_fn=_collate,
            generator=torch.Generator().manual_seed(config.seed),
            persistent_workers=False, prefetch_factor=4 if config.workers else None,
        )
        yield from loader
        epoch, offset = epoch + 1, 0


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Train SEnSeI + segmenter end to end; write logs and checkpoints into ``out_dir``.

    ``resume`` continues the run in ``out_dir`` exactly where its last checkpoint left it;
    ``overwrite`` starts ``out_dir`` again (only the run's own files are removed); without
    either an existing run is never touched. ``stop_at`` stops after that step with a
    checkpoint, as a time budget would (to split a run over sessions without changing its
    schedule). Returns a :class:`TrainResult`.
    """
    threads_before = torch.get_num_threads()
    try:
        return _train(config, Path(out_dir), resume, overwrite, progress, stop_at)
    finally:
        torch.set_num_threads(threads_before)  # ``threads`` must not leak into the caller


def _train(config: TrainConfig, out: Path, resume: bool, overwrite: bool, progress: bool,
           stop_at: int | None) -> TrainResult:
    t_start = time.perf_counter()
    config = _prepare_dir(out, config, resume, overwrite)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    device = _resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    model = _build_model(config).to(device)
    # taps the crop never reaches keep random values that larger inference windows would read
    zeroed = {f"segmenter.{name}": n for name, n in zero_unreached_taps(
        model.segmenter, (1, model.sensei.out_channels, config.crop, config.crop)).items()}
    paths = _trained_modules(config)
    trainable = _freeze_outside(model, paths) if paths else None
    opt = _build_optimizer(config, model)
    ema = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    shipped = ema.average if ema is not None else model  # what is validated and saved
    schedule = LRSchedule(config.schedule, config.lr, config.steps, config.warmup_steps,
                          config.min_lr, config.plateau_factor, config.plateau_patience)
    step = 0
    prior: dict[str, Any] = {}
    if resume:
        from xsensei.weights.checkpoint import load_checkpoint

        loaded, _ = load_checkpoint(out / "last.safetensors")
        tensors, prior = _load_state(out / "last.state.safetensors")
        model_step = loaded.checkpoint_metadata["provenance"].get("steps")  # type: ignore
        if model_step != prior["step"]:
            raise ValueError(f"{out}: last.safetensors (step {model_step}) and "
                             f"last.state.safetensors (step {prior['step']}) disagree")
        if ema is not None:
            ema.average.load_state_dict(loaded.state_dict(), strict=True)
            ema.load_state_dict(prior["ema"])
            model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                                   if k.startswith("model.")}, strict=True)
        else:
            model.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
        opt.load_state_dict(_optimizer_from_tensors(tensors, prior["optimizer"]))
        schedule.load_state_dict(prior["schedule"])
        torch.set_rng_state(tensors["rng.torch"])
        cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda"))]
        if cuda_states and device.type == "cuda":
            torch.cuda.set_rng_state_all(cuda_states)
        step = int(prior["step"])
    model.train()

    generator = _generator_info(config)
    init = None
    if config.init_sensei:
        from xsensei.training.pretrain import read_pretrained_metadata

        pre = read_pretrained_metadata(config.init_sensei)
        init = {
            "path": str(config.init_sensei),
            "sha256": _file_digest(config.init_sensei),
            "pretrain": {k: pre.get(k) for k in ("pretrain_config", "seed", "epoch", "steps",
                                                  "samples_seen", "val_loss", "train_seconds",
                                                  "hardware")},
        }
    from xsensei.weights.checkpoint import resolve_model_path

    if config.init_model:
        path = resolve_model_path(config.init_model)
        init = {"model": str(config.init_model), "sha256": _file_digest(path)}
    teacher = None
    if config.distill_from:
        teacher = load_teacher(config.distill_from, device)
        distill = {"model": str(config.distill_from),
                   "sha256": _file_digest(resolve_model_path(config.distill_from)),
                   "weight": config.distill_weight,
                   "teacher_sees": "each sample without its thermal bands"}
    valsets = build_validation(config)
    data = _training_data(config)
    batches = _batches(data, config, step)
    log = (out / "log.jsonl").open("a")
    best_score = prior.get("best_score")
    best_step = prior.get("best_step")
    best_metrics = prior.get("best_metrics")
    wall_before = float(prior.get("wall_time_s", 0.0))
    sources: Counter[str] = Counter(prior.get("bandset_sources", {}))
    history: list[tuple[int, float]] = []
    final_metrics: dict[str, Any] | None = None
    last_eval_step: int | None = None
    eval_cost = ckpt_cost = step_cost = 0.0
    data_time = compute_time = 0.0
    steps_this_call = 0
    window: list[float] = []
    nonfinite = 0

    def write(record: Mapping[str, Any]) -> None:
        log.write(json.dumps(json_safe(dict(record))) + "\n")
        log.flush()

    def provenance(at_step: int) -> dict[str, Any]:
        stores = ", ".join(f"{path} ({len(ds)} patches)"
                           for path, ds in zip(config.patch_stores, data.real, strict=True))
        data_desc = ("synthetic scenes from xsensei.training.synthetic (physically based, no "
                     "real imagery)")
        if stores:
            data_desc += f"; plus real labelled patches ({config.real_fraction:.0%}) from {stores}"
        return {
            "data": data_desc,
            "generator": generator,
            "seed": config.seed,
            "steps": at_step,
            "batch": config.batch,
            "crop": config.crop,
            "holdout_sensors": list(config.holdout_sensors),
            "train_config": config.to_dict(),
            "init_sensei": init,
            "zeroed_unreached_taps": zeroed,
            **({"distill": distill} if teacher is not None else {}),
            "hardware": describe_hardware(device),
            "precision": precision,
            "wall_time_s": round(wall_before + time.perf_counter() - t_start, 1),
            "best_step": best_step,
            "validation": best_metrics,
        }

    recalibrated_at: int | None = None
    bn_config = _precise_bn_config(config)
    bn_data = _training_data(bn_config) if config.precise_bn_batches else None

    def recalibrate() -> None:
        nonlocal recalibrated_at
        if bn_data is not None and recalibrated_at != step:
            batches = itertools.islice(_batches(bn_data, bn_config, 0), config.precise_bn_batches)
            recalibrate_batchnorm(model, batches, device=device, precision=precision)
            recalibrated_at = step

    def checkpoint() -> None:
        nonlocal ckpt_cost
        from xsensei.weights.checkpoint import save_model

        t0 = time.perf_counter()
        recalibrate()
        save_model(shipped, out / "last.safetensors", name=config.name, trained=True,
                   provenance=provenance(step), inference=inference, overwrite=True)
        _save_state(out / "last.state.safetensors", step=step, opt=opt, schedule=schedule,
                    extra={"best_score": best_score, "best_step": best_step,
                           "best_metrics": best_metrics,
                           "wall_time_s": wall_before + time.perf_counter() - t_start,
                           "bandset_sources": dict(sources),
                           **({"ema": ema.state_dict()} if ema is not None else {})},
                    model=model if ema is not None else None)
        ckpt_cost = time.perf_counter() - t0

    def evaluate() -> dict[str, Any]:
        nonlocal eval_cost, best_score, best_step, best_metrics, last_eval_step
        from xsensei.weights.checkpoint import save_model

        t0 = time.perf_counter()
        recalibrate()
        metrics = validate(shipped, valsets, batch=config.batch, device=device,
                           precision=precision)
        schedule.observe(metrics["val_loss"])
        score = metrics.get("seen", {}).get("F1", math.nan)
        if math.isnan(score):
            score = -metrics["val_loss"]  # no cloud in the seen scenes: fall back to the loss
        improved = best_score is None or score > best_score
        if improved:
            best_score, best_step, best_metrics = score, step, json_safe(metrics)
            save_model(shipped, out / "best.safetensors", name=config.name, trained=True,
                       provenance=provenance(step), inference=inference, overwrite=True)
        eval_cost = time.perf_counter() - t0
        write({"event": "eval", "step": step, **metrics, "best": improved,
               "eval_s": round(eval_cost, 2)})
        last_eval_step = step
        return metrics

    inference = {"window": config.inference_window, "overlap": config.inference_overlap,
                 "thermal_bands": _thermal_policy(config)}
    if not resume:
        write({"event": "start", "config": config.to_dict(), "hardware": describe_hardware(device),
               "precision": precision, "generator": generator})
    else:
        write({"event": "resume", "step": step, "hardware": describe_hardware(device),
               "precision": precision})

    stopped_by = "steps"
    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=step, disable=not progress, unit="step",
               dynamic_ncols=True, desc=config.name)
    try:
        while step < config.steps:
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            sources.update(batch["source"])
            lr = schedule.lr(step)
            for group in opt.param_groups:
                group["lr"] = lr
            if trainable is not None:  # validation and checkpoints switch modes back
                _train_mode_only(model, trainable)
            values = batch["values"].to(device, non_blocking=True)
            desc = batch["descriptors"].to(device)
            mask = batch["band_mask"].to(device)
            target = batch["label"].to(device)
            with _autocast(device, precision):
                logits = model(values, desc, mask)
            loss = segmentation_loss(logits.float(), target, model.classes)
            if teacher is not None:
                with _autocast(device, precision):
                    guide = teacher_logits(teacher, values, desc, mask)
                a = config.distill_weight
                loss = (1.0 - a) * loss + a * distillation_loss(logits, guide)
            opt.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            if math.isfinite(loss_value):
                nonfinite = 0
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
                if ema is not None:
                    ema.update(model)
            elif bool((target != NODATA_LABEL).any()):
                nonfinite += 1
                if nonfinite >= 10:
                    raise FloatingPointError(
                        f"loss not finite for 10 steps in a row at step {step}: lower lr "
                        f"(now {lr:g}) or set grad_clip"
                    )
            step += 1
            steps_this_call += 1
            t2 = time.perf_counter()
            data_time += t1 - t0
            compute_time += t2 - t1
            step_cost = t2 - t0
            history.append((step, loss_value))
            window.append(loss_value)
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                mean_loss = float(np.nanmean(window)) if window else math.nan
                write({"event": "step", "step": step, "loss": mean_loss, "lr": lr,
                       "sec_per_step": (data_time + compute_time) / steps_this_call,
                       "data_s_per_step": data_time / steps_this_call})
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
                window = []
            if step % config.eval_every == 0 or step == config.steps:
                final_metrics = evaluate()
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint()
            if stop_at is not None and step >= stop_at and step < config.steps:
                stopped_by = "stop_at"
                break
            if config.time_budget_s is not None and step < config.steps:
                reserve = eval_cost + ckpt_cost + 2 * step_cost + 5.0
                if time.perf_counter() - t_start + reserve >= config.time_budget_s:
                    stopped_by = "time_budget"
                    break
        if stopped_by != "steps":
            if last_eval_step != step:
                final_metrics = evaluate()
            checkpoint()
            write({"event": "stop", "step": step, "reason": stopped_by})
        else:
            write({"event": "done", "step": step})
    finally:
        bar.close()
        log.close()
        del batches  # shuts DataLoader workers down

    wall = time.perf_counter() - t_start
    busy = data_time + compute_time
    return TrainResult(
        out_dir=out,
        step=step,
        steps=config.steps,
        stopped_by=stopped_by,
        last_path=out / "last.safetensors",
        best_path=out / "best.safetensors" if (out / "best.safetensors").exists() else None,
        best_step=best_step,
        best_metrics=best_metrics,
        final_metrics=json_safe(final_metrics) if final_metrics is not None else None,
        loss_history=history,
        wall_time_s=wall,
        total_wall_time_s=wall_before + wall,
        sec_per_step=busy / steps_this_call if steps_this_call else math.nan,
        data_share=data_time / busy if busy else math.nan,
        bandset_sources=dict(sources),
    )


# ----------------------------------------------------------------------------------------- CLI
def _fmt_scores(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return "n/a"
    parts = []
    for group in ("seen", "unseen"):
        s = metrics.get(group)
        if s:
            parts.append(f"{group} F1 {s['F1']:.1f} OA {s['OA']:.1f}" if s.get("F1") is not None
                         else f"{group} F1 n/a")
    return ", ".join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    """Run (or resume) a recipe and print where the weights are."""
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if args.resume and (out / "config.json").is_file() and args.config is None:
        config = TrainConfig.from_json(out / "config.json")
    elif args.config is None:
        raise ValueError("--config is required unless --resume finds OUT/config.json")
    else:
        config = TrainConfig.from_json(args.config)
    changes: dict[str, Any] = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.time_budget is not None:
        changes["time_budget_s"] = args.time_budget
    if args.workers is not None:
        changes["workers"] = args.workers
    if args.device is not None:
        changes["device"] = args.device
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.init_sensei is not None:
        changes["init_sensei"] = args.init_sensei
    if changes:
        config = config.replace(**changes)
    result = train(config, out, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.quiet, stop_at=args.until)
    print(f"{result.stopped_by}: step {result.step}/{result.steps} in "
          f"{result.wall_time_s / 60:.1f} min ({result.sec_per_step:.3f} s/step, "
          f"data {100 * result.data_share:.0f} %)")
    scores = _fmt_scores(result.best_metrics)
    print(f"best (step {result.best_step}): {result.best_path}  [{scores}]")
    print(f"last: {result.last_path}  log: {out / 'log.jsonl'}")
    if not result.completed:
        print(f"continue with: xsensei train --out {out} --resume", file=sys.stderr)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``xsensei train``."""
    p = subparsers.add_parser(
        "train",
        help="train SEnSeI + a segmenter on synthetic scenes (checkpoints, resume, time budget)",
    )
    p.add_argument("--config", default=None,
                   help="recipe JSON (TrainConfig), e.g. training/default_deeplab.json")
    p.add_argument("--out", required=True, help="run directory (log, checkpoints, best weights)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start --out again, deleting its previous run files")
    p.add_argument("--steps", type=int, default=None, help="total steps (overrides the recipe)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="stop cleanly with a checkpoint before S seconds of wall time")
    p.add_argument("--until", type=int, default=None, metavar="STEP",
                   help="stop after STEP (with a checkpoint); --resume continues the schedule")
    p.add_argument("--init-sensei", default=None, metavar="PATH",
                   help="start from a pre-trained SEnSeI (xsensei pretrain's sensei.safetensors)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
