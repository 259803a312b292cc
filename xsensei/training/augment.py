"""Training augmentations of the SEnSeI paper (FACTS §3), driven by an explicit numpy Generator.

Defaults follow the original training script (``sensei/fitting/fit_model.py``): each step is
applied with the probability used there, in the same order: rot90 + flip; per-band scale
0.95-1.05 (p 0.5); band-wise salt & pepper 0.1 % (p 0.5); pixel-wise salt & pepper 0.1 %
(p 0.1); quantisation to 30 or 40 steps over [-1, 2] (p 0.05 each); per-band shift +-0.05
(p 0.5); white noise sigma 0.02 (p 0.5); descriptor scale 0.99-1.01 on raw nm (p 0.5).
Salt is 1.1, pepper 0, as there.

All randomness comes from the ``rng`` argument, so a sample is a pure function of its seed:
the same (seed, epoch, index) gives the same sample in any DataLoader worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Augment", "flip_rotate"]


def flip_rotate(
    image: NDArray[np.float32], label: NDArray[np.uint8], k: int, flip: bool
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Rotate ``(N, H, W)`` image and ``(H, W)`` label by ``k`` quarter turns, then mirror."""
    image = np.rot90(image, k=k, axes=(1, 2))
    label = np.rot90(label, k=k, axes=(0, 1))
    if flip:
        image = image[:, :, ::-1]
        label = label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


@dataclass(frozen=True)
class Augment:
    """The paper's augmentations; set a field to ``None`` / ``False`` (or its ``p_`` to 0) to
    switch a step off."""

    rot90: bool = True
    flip: bool = True
    band_scale: tuple[float, float] | None = (0.95, 1.05)
    p_band_scale: float = 0.5
    band_salt_pepper: float | None = 0.001
    p_band_salt_pepper: float = 0.5
    pixel_salt_pepper: float | None = 0.001
    p_pixel_salt_pepper: float = 0.1
    salt_value: float = 1.1
    pepper_value: float = 0.0
    quantise_steps: tuple[int, ...] = (30, 40)
    p_quantise: float = 0.05
    quantise_range: tuple[float, float] = (-1.0, 2.0)
    band_shift: float | None = 0.05
    p_band_shift: float = 0.5
    noise_sigma: float | None = 0.02
    p_noise: float = 0.5
    descriptor_scale: tuple[float, float] | None = (0.99, 1.01)
    p_descriptor_scale: float = 0.5

    def __call__(
        self,
        image: NDArray[np.float32],
        label: NDArray[np.uint8],
        wavelengths_nm: NDArray[np.float64],
        rng: np.random.Generator,
    ) -> tuple[NDArray[np.float32], NDArray[np.uint8], NDArray[np.float64]]:
        """Augment ``(N, H, W)`` values, ``(H, W)`` labels and ``(N, 3)`` raw-nm descriptors.

        The per-sample and per-band draws (rotation, which steps apply, factors, shifts,
        descriptor factors) are made first and always, so switching a step off does not change
        them; only the pixel noise patterns follow.
        """
        n = image.shape[0]
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        image, label = flip_rotate(image, label, k if self.rot90 else 0, flip and self.flip)
        img = image.astype(np.float32, copy=True)

        u = rng.random(8)
        factors = rng.uniform(*(self.band_scale or (1.0, 1.0)), size=n)
        shifts = rng.uniform(-(self.band_shift or 0.0), self.band_shift or 0.0, size=n)
        dfac = rng.uniform(*(self.descriptor_scale or (1.0, 1.0)), size=(n, 3))
        if self.band_scale is not None and u[0] < self.p_band_scale:
            img *= factors.astype(np.float32)[:, None, None]
        if self.band_salt_pepper and u[1] < self.p_band_salt_pepper:
            salt = rng.random(img.shape) < self.band_salt_pepper
            pepper = rng.random(img.shape) < self.band_salt_pepper
            img[salt] = self.salt_value
            img[pepper] = self.pepper_value
        if self.pixel_salt_pepper and u[2] < self.p_pixel_salt_pepper:
            salt = rng.random(img.shape[1:]) < self.pixel_salt_pepper
            pepper = rng.random(img.shape[1:]) < self.pixel_salt_pepper
            img[:, salt] = self.salt_value
            img[:, pepper] = self.pepper_value
        lo, hi = self.quantise_range
        for j, steps in enumerate(self.quantise_steps[:2]):
            if u[3 + j] < self.p_quantise:
                step = np.float32((hi - lo) / steps)
                img = np.floor(img / step) * step
        if self.band_shift and u[5] < self.p_band_shift:
            img += shifts.astype(np.float32)[:, None, None]
        if self.noise_sigma and u[6] < self.p_noise:
            img += (rng.standard_normal(img.shape) * self.noise_sigma).astype(np.float32)
        wl = np.array(wavelengths_nm, dtype=np.float64, copy=True)
        if self.descriptor_scale is not None and u[7] < self.p_descriptor_scale:
            # per value as in the paper; re-sorted so that min <= centre <= max still holds
            wl = np.sort(wl * dfac, axis=-1)
        return img.astype(np.float32, copy=False), label, wl
