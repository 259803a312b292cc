"""SEnSeI pre-training (the v1 "autoencoder") as a resumable, deterministic training run.

SEnSeI learns to describe any band set without imagery: random bands on 1x1 images are encoded
and two heads must recover which descriptors went in and each band's value
(:mod:`xsensei.nn.heads`). This module runs that recipe (SENSEI-FACTS section 2) and produces
``sensei.safetensors``, which the supervised trainer loads with :func:`load_pretrained_sensei`.

Design choices, and why:

* **Batches are sampled on the CPU** from one seeded generator and then moved to the device, so
  a CPU run and a GPU run see the same batches, the validation set is the same on every device,
  and the RNG state fits in a checkpoint independent of the device. The cost on a GPU is small
  (a batch is at most 1024 x 13 x 7 random numbers) and overlaps with queued GPU work.
* **Everything is checkpointed each epoch** (weights, heads, momentum buffers, the lr schedule,
  the generator state and the log history) in one safetensors file with JSON metadata, written
  atomically, so an interrupted run resumes bit for bit on the CPU. Nothing is pickled.
* **The lr schedule is Keras' ReduceLROnPlateau**, written out here, because that is what the
  original used and its ``patience`` differs by one from torch's (Keras reduces after
  ``patience`` epochs without improvement, torch after ``patience + 1``).
* **The L1 penalty** (``l1``, the original used 1e-5) applies to the kernels of the five layers
  that carried it in v1: the final Linear of SEnSeI's three blocks and of the heads' two
  descriptor-embedding blocks (read from the v1 model config). It is added to the training loss
  only; logged validation losses are the data term, comparable with the v1 figure of ~0.18.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from xsensei._hardware import describe_hardware
from xsensei.errors import CheckpointError
from xsensei.nn.heads import (
    CANDIDATE_LOSS_WEIGHT,
    VALUE_LOSS_WEIGHT,
    PretrainBatch,
    PretrainHeads,
    PretrainHeadsConfig,
    batch_recovery_loss,
    pretraining_loss_components,
    sample_pretraining_batch,
    sample_validation_batch,
)
from xsensei.nn.sensei import SEnSeI, SEnSeIConfig
from xsensei.training._config import JsonConfig
from xsensei.weights.checkpoint import METADATA_KEY, tensor_digest

__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "add_parser",
    "l1_penalty",
    "load_pretrained_sensei",
    "pretrain",
    "read_pretrained_metadata",
    "read_run_config",
    "time_steps",
]

#: Format tag of the exported SEnSeI weights (``sensei.safetensors``).
SENSEI_FORMAT = "xsensei-sensei-pretrained"
#: Format tag of the full training state (``last.safetensors``).
STATE_FORMAT = "xsensei-pretrain-state"
FORMAT_VERSION = 1

LAST_NAME = "last.safetensors"
BEST_NAME = "sensei.safetensors"
LOG_NAME = "log.jsonl"
#: Files that mark a folder as holding a run (what ``overwrite`` removes).
RUN_FILES = (LAST_NAME, BEST_NAME, LOG_NAME)

#: Config fields that may change when resuming: they do not alter what is computed on the CPU
#: (threads and device can change float rounding; epochs only extends the run).
RESUMABLE_CHANGES = frozenset({"epochs", "device", "threads"})


# --------------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainConfig(JsonConfig):
    """Everything that determines a pre-training run; defaults are the v1 recipe.

    ``patience`` follows Keras: the lr is multiplied by ``factor`` once the validation loss has
    not improved by more than ``min_delta`` for ``patience`` epochs, never going below
    ``min_lr``. ``threads=0`` leaves torch's thread count alone. ``val_seed`` is separate from
    ``seed`` so that runs with different training seeds are scored on the same samples.
    """

    epochs: int = 100
    steps_per_epoch: int = 1000
    batch: int = 1024
    min_bands: int = 3
    max_bands: int = 13
    lr: float = 0.01
    momentum: float = 0.75
    patience: int = 2
    factor: float = 0.25
    min_lr: float = 2e-5
    min_delta: float = 1e-4
    val_samples: int = 4096
    val_seed: int = 0
    val_chunk: int = 1024
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    l1: float = 0.0

    def __post_init__(self) -> None:
        positive = ("epochs", "steps_per_epoch", "batch", "min_bands", "val_samples", "val_chunk")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.max_bands, int) or self.max_bands < self.min_bands:
            raise ValueError(
                f"max_bands must be an int >= min_bands ({self.min_bands}), got {self.max_bands!r}"
            )
        for name in ("patience", "threads", "seed", "val_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {self.factor!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must be in [0, lr], got {self.min_lr!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")
        if not (math.isfinite(self.l1) and self.l1 >= 0):
            raise ValueError(f"l1 must be >= 0, got {self.l1!r}")
        _resolve_device(self.device)  # fail at construction, not an hour into a run

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PretrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown pretrain config keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass
class PretrainResult:
    """What a run produced. ``history`` holds the log records (epoch 0 = before training)."""

    out_dir: Path
    sensei_path: Path
    last_path: Path
    log_path: Path
    config: PretrainConfig
    epochs_done: int
    steps_done: int
    best_epoch: int
    best_val_loss: float
    final_val_loss: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def initial_val_loss(self) -> float:
        """Validation loss of the freshly initialised networks."""
        return float(self.history[0]["val_loss"])


# --------------------------------------------------------------------------------------------
# Small pieces: device, RNG, schedule, losses
# --------------------------------------------------------------------------------------------


def _resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; anything else must parse as a torch device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from exc


def _derived_seeds(seed: int, count: int) -> list[int]:
    """Independent 63-bit seeds from one user seed (torch generators seeded with nearby
    integers give correlated streams; SeedSequence decorrelates them)."""
    states = np.random.SeedSequence(seed).generate_state(count, dtype=np.uint64)
    return [int(s) & (2**63 - 1) for s in states]


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (0: unchanged), restoring the caller's setting."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(before)


def _build_networks(seed: int) -> tuple[SEnSeI, PretrainHeads]:
    """v1-sized SEnSeI and heads, initialised from ``seed`` on the CPU (identical on any
    device) without disturbing the caller's global RNG."""
    (init_seed,) = _derived_seeds(seed, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return SEnSeI(SEnSeIConfig()), PretrainHeads(PretrainHeadsConfig())


def _l1_layers(sensei: SEnSeI, heads: PretrainHeads) -> list[nn.Linear]:
    return [
        sensei.descriptor_block.final,
        sensei.permutation_block.stack.final,
        sensei.combined_block.final,
        heads.candidate_embedding.final,
        heads.real_embedding.final,
    ]


def l1_penalty(sensei: SEnSeI, heads: PretrainHeads) -> Tensor:
    """``sum |kernel|`` over the five layers v1 regularised (multiply by ``l1``, v1: 1e-5)."""
    return sum(layer.weight.abs().sum() for layer in _l1_layers(sensei, heads))  # type: ignore[return-value]


@dataclass
class _Plateau:
    """Keras ReduceLROnPlateau (mode min, absolute ``min_delta``, no cooldown).

    Kept as plain floats so its state is a small JSON object in the checkpoint.
    """

    lr: float
    factor: float
    patience: int
    min_lr: float
    min_delta: float
    best: float | None = None
    wait: int = 0

    def step(self, value: float) -> bool:
        """Record one epoch's validation loss; True when the lr was just reduced."""
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        if self.wait >= self.patience and self.lr > self.min_lr:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.wait = 0
            return True
        return False

    def state(self) -> dict[str, Any]:
        return {"lr": self.lr, "best": self.best, "wait": self.wait}


class _Validation:
    """v1's validation set, sampled once on the CPU and kept on the device.

    On the CPU this gives exactly :func:`xsensei.nn.heads.recovery_loss` with
    ``seed=val_seed``; sampling on the CPU makes the numbers device-independent.
    """

    def __init__(self, samples: int, seed: int, chunk: int, device: torch.device) -> None:
        generator = torch.Generator().manual_seed(seed)
        batch = sample_validation_batch(samples, generator)
        self.batch = PretrainBatch(*(t.to(device) for t in batch))
        self.chunk = chunk

    def __call__(self, sensei: SEnSeI, heads: PretrainHeads) -> dict[str, float]:
        return batch_recovery_loss(sensei, heads, self.batch, self.chunk)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _write_safetensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Atomic write (tmp + rename): a crash never leaves a half-written checkpoint behind."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**meta, "sha256": tensor_digest(tensors)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    os.replace(tmp, path)


def _read_safetensors(path: Path, expected_format: str | None) -> tuple[dict[str, Tensor], dict]:
    """Tensors and metadata of one of our files, checked for format and checksum."""
    if not path.is_file():
        raise CheckpointError(f"no file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    if raw is None:
        raise CheckpointError(f"{path} has no xsensei metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({exc})") from exc
    fmt = meta.get("format")
    if expected_format is not None and fmt != expected_format:
        raise CheckpointError(f"{path} is a {fmt!r} file, expected {expected_format!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported {fmt!r} version {meta.get('format_version')!r}"
        )
    if tensor_digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"{path}: tensor checksum does not match; the file is corrupted")
    return tensors, meta


def _prefixed(prefix: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _unprefixed(prefix: str, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _split_optimizer_state(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state as (tensors for safetensors, JSON for scalars): no pickle needed."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entry in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def read_run_config(out_dir: str | os.PathLike[str]) -> PretrainConfig:
    """The config stored in ``out_dir/last.safetensors`` (what ``--resume`` continues)."""
    path = Path(out_dir) / LAST_NAME
    _, meta = _read_safetensors(path, STATE_FORMAT)
    return PretrainConfig.from_dict(meta["config"])


def read_pretrained_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata of exported SEnSeI weights: config, steps, val loss, seed, time, hardware."""
    return _read_safetensors(Path(path), SENSEI_FORMAT)[1]


def load_pretrained_sensei(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> SEnSeI:
    """SEnSeI from ``sensei.safetensors`` (or a run's ``last.safetensors``), loaded strictly.

    Returned in train mode, ready for fine-tuning; the file's metadata is attached as
    ``sensei.pretrain_metadata`` so a supervised run can record where its encoder came from.
    """
    path = Path(path)
    tensors, meta = _read_safetensors(path, None)
    if meta.get("format") == STATE_FORMAT:
        tensors = _unprefixed("sensei", tensors)
    elif meta.get("format") != SENSEI_FORMAT:
        raise CheckpointError(
            f"{path} is a {meta.get('format')!r} file, not pre-trained SEnSeI weights "
            f"({SENSEI_FORMAT!r} or {STATE_FORMAT!r})"
        )
    try:
        sensei = SEnSeI(SEnSeIConfig.from_dict(meta["sensei"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: SEnSeI architecture metadata is invalid ({exc})") from exc
    try:
        sensei.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the architecture: {exc}") from exc
    sensei.pretrain_metadata = meta  # type: ignore[assignment]
    return sensei.to(device)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


class _Run:
    """Mutable state of one run: networks, optimizer, schedule, generator, bookkeeping."""

    def __init__(self, config: PretrainConfig, out_dir: Path) -> None:
        self.config = config
        self.out_dir = out_dir
        self.device = _resolve_device(config.device)
        sensei, heads = _build_networks(config.seed)
        self.sensei = sensei.to(self.device)
        self.heads = heads.to(self.device)
        self.optimizer = torch.optim.SGD(
            [*self.sensei.parameters(), *self.heads.parameters()],
            lr=config.lr,
            momentum=config.momentum,
        )
        self.plateau = _Plateau(
            config.lr, config.factor, config.patience, config.min_lr, config.min_delta
        )
        _, data_seed = _derived_seeds(config.seed, 2)
        self.generator = torch.Generator().manual_seed(data_seed)
        self.epoch = 0
        self.step = 0
        self.best_val: float | None = None
        self.best_epoch = 0
        self.seconds = 0.0
        self.history: list[dict[str, Any]] = []

    # -- checkpointing ---------------------------------------------------------------------

    def save_last(self) -> None:
        opt_tensors, opt_meta = _split_optimizer_state(self.optimizer)
        tensors = {
            **_prefixed("sensei", self.sensei.state_dict()),
            **_prefixed("heads", self.heads.state_dict()),
            **opt_tensors,
            "rng.data": self.generator.get_state(),
        }
        meta = {
            "format": STATE_FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "sensei": self.sensei.config.to_dict(),
            "heads": self.heads.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_val_loss": self.best_val,
            "best_epoch": self.best_epoch,
            "seconds": self.seconds,
            "plateau": self.plateau.state(),
            "optimizer": opt_meta,
            "history": self.history,
        }
        _write_safetensors(self.out_dir / LAST_NAME, tensors, meta)

    def load_last(self) -> None:
        tensors, meta = _read_safetensors(self.out_dir / LAST_NAME, STATE_FORMAT)
        try:
            self.sensei.load_state_dict(_unprefixed("sensei", tensors), strict=True)
            self.heads.load_state_dict(_unprefixed("heads", tensors), strict=True)
            self.optimizer.load_state_dict(_join_optimizer_state(tensors, meta["optimizer"]))
            self.generator.set_state(tensors["rng.data"])
            plateau = meta["plateau"]
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{self.out_dir / LAST_NAME}: cannot resume ({exc})") from exc
        self.plateau.lr = float(plateau["lr"])
        self.plateau.best = plateau["best"]
        self.plateau.wait = int(plateau["wait"])
        self._set_lr(self.plateau.lr)
        self.epoch = int(meta["epoch"])
        self.step = int(meta["step"])
        self.best_val = meta["best_val_loss"]
        self.best_epoch = int(meta["best_epoch"])
        self.seconds = float(meta["seconds"])
        self.history = list(meta["history"])

    def save_best(self, val: Mapping[str, float]) -> None:
        meta = {
            "format": SENSEI_FORMAT,
            "format_version": FORMAT_VERSION,
            "sensei": self.sensei.config.to_dict(),
            "pretrain_config": self.config.to_dict(),
            "seed": self.config.seed,
            "epoch": self.epoch,
            "steps": self.step,
            "samples_seen": self.step * self.config.batch,
            "val_loss": val["loss"],
            "val_candidate_mse": val["candidate_mse"],
            "val_value_mse": val["value_mse"],
            "val_note": "0.5 * candidate MSE + 1.0 * band-value MSE on the v1 validation bank "
            f"({self.config.val_samples} samples, seed {self.config.val_seed}); no L1 term",
            "train_seconds": self.seconds,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "hardware": describe_hardware(self.device),
        }
        _write_safetensors(self.out_dir / BEST_NAME, dict(self.sensei.state_dict()), meta)

    def write_log(self) -> None:
        """Rewrite ``log.jsonl`` from the checkpointed history, so the log always matches
        the state a resume continues from (no duplicate or missing epochs after a crash)."""
        path = self.out_dir / LOG_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(rec) + "\n" for rec in self.history))
        os.replace(tmp, path)

    # -- training --------------------------------------------------------------------------

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def train_step(self, n_bands: int) -> tuple[Tensor, Tensor, Tensor]:
        """One SGD step on a fresh batch; returns detached (loss, candidate MSE, value MSE)."""
        batch = sample_pretraining_batch(self.config.batch, n_bands, self.generator)
        batch = PretrainBatch(*(t.to(self.device, non_blocking=True) for t in batch))
        features = self.sensei(batch.values, batch.descriptors)
        probs, values = self.heads(features, batch.candidates, batch.descriptors)
        cand, val = pretraining_loss_components(probs, batch.labels, values, batch.target_values)
        loss = CANDIDATE_LOSS_WEIGHT * cand + VALUE_LOSS_WEIGHT * val
        objective = loss
        if self.config.l1:
            objective = loss + self.config.l1 * l1_penalty(self.sensei, self.heads)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        self.step += 1
        return loss.detach(), cand.detach(), val.detach()

    def train_epoch(self, progress: bool) -> dict[str, float]:
        """``steps_per_epoch`` steps; band counts for the epoch are drawn up front from the
        same generator so the stream depends only on the seed."""
        c = self.config
        counts = torch.randint(
            c.min_bands, c.max_bands + 1, (c.steps_per_epoch,), generator=self.generator
        ).tolist()
        self.sensei.train()
        self.heads.train()
        sums = torch.zeros(3, device=self.device)
        bar = _progress(range(c.steps_per_epoch), progress, f"epoch {self.epoch + 1}/{c.epochs}")
        for i in bar:
            parts = self.train_step(counts[i])
            sums += torch.stack(parts)
            if progress and (i + 1) % 10 == 0:  # a float() syncs the GPU: not every step
                bar.set_postfix(loss=f"{float(sums[0]) / (i + 1):.4f}", refresh=False)
        mean = (sums / c.steps_per_epoch).tolist()
        if not all(math.isfinite(v) for v in mean):
            raise FloatingPointError(
                f"training diverged in epoch {self.epoch + 1} (mean loss {mean[0]}); lower lr "
                f"or resume from the last good epoch in {self.out_dir}"
            )
        return {"train_loss": mean[0], "train_candidate_mse": mean[1], "train_value_mse": mean[2]}


def _progress(iterable: Sequence[int], enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def _record(
    run: _Run, val: Mapping[str, float], train: Mapping[str, float] | None, seconds: float
) -> dict[str, Any]:
    rec: dict[str, Any] = {"epoch": run.epoch, "step": run.step}
    rec.update(train or {"train_loss": None})
    rec.update(
        val_loss=val["loss"],
        val_candidate_mse=val["candidate_mse"],
        val_value_mse=val["value_mse"],
        lr=run.optimizer.param_groups[0]["lr"],
        seconds=seconds,
    )
    return rec


def _prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a previous run unless told to resume or overwrite it."""
    if resume and overwrite:
        raise ValueError("resume and overwrite are mutually exclusive")
    present = [name for name in RUN_FILES if (out_dir / name).exists()]
    if resume:
        if not (out_dir / LAST_NAME).is_file():
            raise FileNotFoundError(f"nothing to resume: no {LAST_NAME} in {out_dir}")
        return
    if present and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a pre-training run ({', '.join(present)}); pass "
            "resume=True (--resume) to continue it or overwrite=True (--overwrite) to replace it"
        )
    for name in RUN_FILES:
        for path in (out_dir / name, out_dir / (name + ".tmp")):
            path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _check_resume_config(given: PretrainConfig, stored: PretrainConfig) -> None:
    diff = {
        k: (v, getattr(given, k))
        for k, v in stored.to_dict().items()
        if getattr(given, k) != v and k not in RESUMABLE_CHANGES
    }
    if diff:
        detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
        raise ValueError(
            f"cannot resume with a different recipe ({detail}); only "
            f"{sorted(RESUMABLE_CHANGES)} may change"
        )


def pretrain(
    config: PretrainConfig | None,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> PretrainResult:
    """Pre-train SEnSeI with the v1 recovery task; write ``out_dir/{sensei,last}.safetensors``
    and ``out_dir/log.jsonl``.

    ``config=None`` means the v1 defaults, or with ``resume=True`` the run's stored config.
    Epoch 0 in the log is the validation loss before any training. ``sensei.safetensors`` is
    rewritten whenever the validation loss reaches a new minimum. On the CPU with the same
    thread count a resumed run is bit-identical to an uninterrupted one.
    """
    out = Path(out_dir)
    _prepare_out_dir(out, resume, overwrite)
    if resume:
        stored = read_run_config(out)
        if config is None:
            config = stored
        else:
            _check_resume_config(config, stored)
    config = config or PretrainConfig()

    with _torch_threads(config.threads):
        run = _Run(config, out)
        validate = _Validation(config.val_samples, config.val_seed, config.val_chunk, run.device)
        if resume:
            run.load_last()
        else:
            start = time.perf_counter()
            val = validate(run.sensei, run.heads)
            run.seconds += time.perf_counter() - start
            run.history.append(_record(run, val, None, time.perf_counter() - start))
            run.save_last()
        run.write_log()

        while run.epoch < config.epochs:
            start = time.perf_counter()
            train = run.train_epoch(progress)
            run.epoch += 1
            val = validate(run.sensei, run.heads)
            if not math.isfinite(val["loss"]):
                raise FloatingPointError(f"validation loss is {val['loss']} after epoch "
                                         f"{run.epoch}; lower lr")
            elapsed = time.perf_counter() - start
            run.seconds += elapsed
            run.history.append(_record(run, val, train, elapsed))
            if run.best_val is None or val["loss"] < run.best_val:
                run.best_val, run.best_epoch = val["loss"], run.epoch
                run.save_best(val)
            if run.plateau.step(val["loss"]):
                run._set_lr(run.plateau.lr)
            run.save_last()
            run.write_log()
            if progress:
                rec = run.history[-1]
                print(
                    f"epoch {run.epoch}/{config.epochs}: train {rec['train_loss']:.4f} "
                    f"val {rec['val_loss']:.4f} (cand {rec['val_candidate_mse']:.4f}, "
                    f"value {rec['val_value_mse']:.4f}) lr {rec['lr']:.3g} "
                    f"{elapsed:.0f}s",
                    file=sys.stderr,
                )

    return PretrainResult(
        out_dir=out,
        sensei_path=out / BEST_NAME,
        last_path=out / LAST_NAME,
        log_path=out / LOG_NAME,
        config=config,
        epochs_done=run.epoch,
        steps_done=run.step,
        best_epoch=run.best_epoch,
        best_val_loss=float(run.best_val if run.best_val is not None else math.nan),
        final_val_loss=float(run.history[-1]["val_loss"]),
        seconds=run.seconds,
        history=run.history,
    )


def time_steps(
    config: PretrainConfig | None = None,
    n_bands: Sequence[int] = (3, 8, 13),
    repeats: int = 3,
    warmup: int = 1,
) -> dict[int, float]:
    """Median seconds per training step at ``config.batch`` for each band count.

    For sizing a recipe on a given machine: cost grows ~N^2 (the pairwise block), so the
    mean over N = 3..13 is close to the N = 9 figure.
    """
    config = config or PretrainConfig()
    out: dict[int, float] = {}
    with _torch_threads(config.threads):
        run = _Run(config, Path("."))
        for n in n_bands:
            times = []
            for i in range(warmup + repeats):
                start = time.perf_counter()
                loss, _, _ = run.train_step(int(n))
                float(loss)  # wait for the device
                if i >= warmup:
                    times.append(time.perf_counter() - start)
            out[int(n)] = float(np.median(times))
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

_CLI_OVERRIDES = ("epochs", "steps_per_epoch", "batch", "seed", "device", "threads", "lr", "l1")


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``xsensei pretrain``: build the config (file, stored run or defaults, then flags)."""
    if args.benchmark:
        base = PretrainConfig.from_json(args.config) if args.config else PretrainConfig()
        config = replace(base, **_given_overrides(args))
        times = time_steps(config, n_bands=args.benchmark)
        for n, seconds in times.items():
            print(f"batch {config.batch}, N={n}: {seconds * 1000:.0f} ms/step")
        return 0
    if not args.out:
        raise ValueError("--out DIR is required (except with --benchmark)")
    out = Path(args.out)
    if args.config:
        base = PretrainConfig.from_json(args.config)
    elif args.resume:
        base = read_run_config(out)
    else:
        base = PretrainConfig()
    config = replace(base, **_given_overrides(args))
    result = pretrain(
        config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet
    )
    print(
        f"pre-trained SEnSeI: {result.epochs_done} epochs, {result.steps_done} steps, "
        f"val loss {result.initial_val_loss:.4f} -> {result.final_val_loss:.4f} "
        f"(best {result.best_val_loss:.4f} at epoch {result.best_epoch}), "
        f"{result.seconds / 60:.1f} min"
    )
    print(f"weights: {result.sensei_path}")
    print(f"log: {result.log_path}")
    return 0


def _given_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _CLI_OVERRIDES if getattr(args, k) is not None}


def _band_counts(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def add_parser(subparsers: Any) -> None:
    """Register ``xsensei pretrain`` on an ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "pretrain",
        help="pre-train SEnSeI on synthetic band sets (no imagery needed)",
        description="Pre-train SEnSeI with the v1 recovery task. Writes DIR/sensei.safetensors "
        "(best validation loss), DIR/last.safetensors (resumable state) and DIR/log.jsonl.",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="run folder (required)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="JSON PretrainConfig; flags below override it")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps-per-epoch", dest="steps_per_epoch", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--l1", type=float, default=None, help="L1 on 5 final layers (v1: 1e-5)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (0: default)")
    p.add_argument("--resume", action="store_true", help="continue DIR/last.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in DIR")
    p.add_argument("--benchmark", type=_band_counts, default=None, metavar="N,N,...",
                   help="only time training steps for these band counts and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_pretrain)
