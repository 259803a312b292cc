"""Thermal-invariance distillation: the teacher sees no thermal band, the student learns that."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import xsensei
from xsensei.descriptors import encode_wavelengths
from xsensei.training.distill import (
    distillation_loss,
    load_teacher,
    reflective_band_mask,
    teacher_logits,
)
from xsensei.training.train import TrainConfig, train
from xsensei.weights.checkpoint import read_metadata

# blue, red, NIR, SWIR 1.6 um, then two thermal bands (Landsat 8 B10 / B11-like)
WAVELENGTHS = np.array([[450, 490, 520], [630, 660, 690], [840, 865, 880], [1560, 1610, 1660],
                        [10400, 10900, 11400], [11500, 12000, 12500]], dtype=float)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(2, 6, 16, 16, generator=gen) * 0.6
    desc = torch.tensor(encode_wavelengths(WAVELENGTHS))[None].repeat(2, 1, 1)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 5] = False  # padding stays padding
    return values, desc, mask


def test_reflective_mask_drops_thermal_bands_only() -> None:
    _, desc, mask = _batch()
    keep = reflective_band_mask(desc, mask)
    assert keep.tolist() == [[True] * 4 + [False] * 2] * 2
    # a sample with thermal bands only keeps them: the teacher must see something
    thermal_only = reflective_band_mask(desc[:, 4:], mask[:, 4:])
    assert thermal_only.tolist() == mask[:, 4:].tolist()


def test_teacher_without_thermal_equals_teacher_on_reflective_bands() -> None:
    teacher = load_teacher("fast", torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    values, desc, mask = _batch()
    masked = teacher_logits(teacher, values, desc, mask)
    with torch.no_grad():
        reflective = teacher(values[:, :4], desc[:, :4])
    torch.testing.assert_close(masked, reflective, atol=1e-4, rtol=1e-4)


def test_distillation_loss_is_kl_of_class_distributions() -> None:
    logits = torch.randn(2, 4, 8, 8)
    assert float(distillation_loss(logits, logits)) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(logits, logits + 3.0)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(2, 4, 8, 8)
    p = torch.softmax(other, 1)
    expected = (p * (torch.log_softmax(other, 1) - torch.log_softmax(logits, 1))).sum(1).mean()
    assert float(distillation_loss(logits, other)) == pytest.approx(float(expected), rel=1e-5)
    assert float(distillation_loss(logits, other)) > 0


def test_student_learns_to_answer_with_thermal_bands_as_teacher_does_without() -> None:
    torch.manual_seed(0)
    teacher = load_teacher("fast", torch.device("cpu"))
    student = xsensei.load_model("fast").eval()  # eval: batch norm fixed, weights trainable
    for p in student.parameters():
        p.requires_grad_(True)
    values, desc, mask = _batch()
    guide = teacher_logits(teacher, values, desc, mask)

    def gap() -> float:
        with torch.no_grad():
            return float(distillation_loss(student(values, desc, mask), guide))

    # without thermal bands the student (a copy of the teacher) already agrees exactly
    with torch.no_grad():
        same = distillation_loss(student(values[:, :4], desc[:, :4]), guide)
    assert float(same) < 1e-6
    before = gap()
    assert before > 1e-4  # the thermal bands do change the fast model's answer
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    for _ in range(30):
        opt.zero_grad()
        distillation_loss(student(values, desc, mask), guide).backward()
        opt.step()
    assert gap() < 0.5 * before  # measured: 0.035 -> 0.011


def test_training_with_a_teacher_records_it(tmp_path: Path) -> None:
    base = dict(name="tiny", segmenter="pixelnet", crop=32, batch=4, lr=1e-3, warmup_steps=1,
                val_scenes=1, val_size=32, val_sensors=("landsat-8",), val_unseen=("landsat-7",),
                eval_every=100, checkpoint_every=100, log_every=1, threads=1, workers=0,
                precision="fp32", steps_per_epoch=16, seed=3, random_thermal_prob=0.5)
    first = train(TrainConfig(steps=2, **base), tmp_path / "a", progress=False)  # type: ignore[arg-type]
    cfg = TrainConfig(steps=2, init_model=str(first.last_path), distill_from=str(first.last_path),
                      distill_weight=0.7, **base)  # type: ignore[arg-type]
    result = train(cfg, tmp_path / "b", progress=False)
    assert all(np.isfinite(loss) for _, loss in result.loss_history)
    prov = read_metadata(result.last_path)["provenance"]
    assert prov["distill"]["model"] == str(first.last_path)
    assert prov["distill"]["weight"] == 0.7 and len(prov["distill"]["sha256"]) == 64
    assert "distill" not in read_metadata(first.last_path)["provenance"]
    with pytest.raises(ValueError, match="distill_weight"):
        TrainConfig(distill_weight=1.5)
