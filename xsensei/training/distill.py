"""Thermal-invariance distillation: a frozen teacher shows the student what to answer.

The shipped models score lower on synthetic scenes *with* their thermal bands than without
them (model card, "Known problems"), and that is what makes held-out sensors with thermal
bands (Landsat 7, SLSTR) look worse than the seen ones. Here a frozen teacher (the model being
fine-tuned) sees each training sample **without** its thermal bands, and the student sees all
of them; the student learns from the labels and from the teacher's answer:

    loss = (1 - weight) * cross_entropy(student, labels) + weight * KL(teacher || student)

On samples without thermal bands the teacher sees what the student sees, so the distillation
term holds the student to the teacher's behaviour there (the real dev scenes have no thermal
band); with thermal bands the student must do at least as well as the teacher does without
them, and the label term lets it use them where they help.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xsensei.band_metadata import THERMAL_CENTRE_NM
from xsensei.descriptors import encode_wavelengths
from xsensei.nn.model import CloudMaskModel

#: Encoded descriptor centre above which a band is thermal (``THERMAL_CENTRE_NM``).
THERMAL_CENTRE_ENCODED = float(encode_wavelengths(np.full(3, THERMAL_CENTRE_NM))[1])


def reflective_band_mask(descriptors: torch.Tensor, band_mask: torch.Tensor) -> torch.Tensor:
    """``band_mask`` without the thermal bands; a sample with only thermal bands keeps them all.

    ``descriptors`` ``(B, N, 3)`` encoded, ``band_mask`` ``(B, N)`` bool (True = real band).
    """
    reflective = band_mask & (descriptors[..., 1] <= THERMAL_CENTRE_ENCODED)
    empty = ~reflective.any(dim=1, keepdim=True)
    return torch.where(empty, band_mask, reflective)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel KL(teacher || student) of the class distributions ``(B, C, H, W)``."""
    log_student = F.log_softmax(student_logits.float(), dim=1)
    log_teacher = F.log_softmax(teacher_logits.float(), dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="none", log_target=True)
    return kl.sum(dim=1).mean()


def load_teacher(name_or_path: str, device: torch.device) -> CloudMaskModel:
    """A frozen model in eval mode (packaged name or checkpoint path)."""
    from xsensei.weights.checkpoint import load_model

    teacher = load_model(name_or_path).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def teacher_logits(teacher: CloudMaskModel, values: torch.Tensor, descriptors: torch.Tensor,
                   band_mask: torch.Tensor) -> torch.Tensor:
    """The teacher's logits for the batch seen without its thermal bands."""
    with torch.no_grad():
        return teacher(values, descriptors, reflective_band_mask(descriptors, band_mask))
