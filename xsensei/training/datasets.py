"""Torch datasets over a patch store or a synthetic scene generator, and their collate function.

Every sample is a pure function of ``(seed, epoch, index)``: its random band subset, crop and
augmentations come from ``numpy.random.default_rng([seed, epoch, index])``, never from global
state, so batches are identical with 0 or N DataLoader workers and across restarts. Call
:meth:`PatchDataset.set_epoch` before each epoch (with ``persistent_workers=False``, the default,
workers pick it up when the epoch's iterator starts).

Samples are dicts: ``values`` (N, h, w) float32 (no data filled with ``fill_value``),
``descriptors`` (N, 3) float32 ENCODED with :func:`xsensei.descriptors.encode_wavelengths`,
``label`` (h, w) int64, ``index`` and ``label_scheme``. Samples differ in N, so batch them with
:func:`collate_patches`, which pads bands and returns the ``band_mask`` SEnSeI takes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from xsensei.descriptors import encode_wavelengths
from xsensei.training.augment import Augment
from xsensei.training.patches import LABEL_VALUES, NODATA_LABEL, SCHEME_FULL, PatchStore

__all__ = ["ANY_CLOUD_TARGET", "PatchDataset", "SyntheticDataset", "collate_patches",
           "segmentation_loss", "target_lut"]

Sample = dict[str, Any]


#: Training target of a generic "cloud" label for a model with thick and thin cloud classes:
#: the loss is ``-log(p(thick) + p(thin))`` there (:func:`segmentation_loss`).
ANY_CLOUD_TARGET = 254


def target_lut(classes: Sequence[str] | None) -> NDArray[np.int64]:
    """Store label value -> training class index (255 = ignore), for a model's ``classes``.

    With thin and thick cloud merged into ``cloud`` (2 / 3 classes) every cloud label is cloud;
    without a ``cloud_shadow`` class shadow counts as clear (the paper's 2-class setting). For
    a 4-class model a generic "cloud" label (thick or thin unknown) becomes
    :data:`ANY_CLOUD_TARGET`: it teaches "some cloud class". ``None`` keeps store values.
    """
    lut = np.full(256, NODATA_LABEL, dtype=np.int64)
    if classes is None:
        for v in (*LABEL_VALUES.values(), NODATA_LABEL):
            lut[v] = v
        return lut
    from xsensei.nn.model import check_classes

    classes = check_classes(classes)
    idx = {c: i for i, c in enumerate(classes)}
    lut[LABEL_VALUES["clear"]] = idx["clear"]
    for name in ("thick_cloud", "thin_cloud"):
        target = idx.get(name, idx.get("cloud"))
        if target is None:
            raise ValueError(f"classes {classes} have no class for {name!r} labels")
        lut[LABEL_VALUES[name]] = target
    lut[LABEL_VALUES["cloud_shadow"]] = idx.get("cloud_shadow", idx["clear"])
    lut[LABEL_VALUES["cloud"]] = idx.get("cloud", ANY_CLOUD_TARGET)
    return lut


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, classes: Sequence[str],
                      reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over ``classes``, 255 ignored; pixels whose target is
    :data:`ANY_CLOUD_TARGET` score ``-log`` of the summed cloud-class probabilities. Without
    such pixels it is exactly ``F.cross_entropy``."""
    import torch.nn.functional as F

    from xsensei.nn.model import CLOUD_CLASSES

    any_cloud = target == ANY_CLOUD_TARGET
    if not bool(any_cloud.any()):
        return F.cross_entropy(logits, target, ignore_index=NODATA_LABEL, reduction=reduction)
    cloud = [i for i, c in enumerate(classes) if c in CLOUD_CLASSES]
    logp = F.log_softmax(logits, dim=1)
    plain = target.masked_fill(any_cloud, NODATA_LABEL)
    total = F.nll_loss(logp, plain, ignore_index=NODATA_LABEL, reduction="sum")
    total = total - torch.logsumexp(logp[:, cloud], dim=1)[any_cloud].sum()
    if reduction == "sum":
        return total
    return total / ((plain != NODATA_LABEL).sum() + any_cloud.sum()).clamp(min=1)


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def _band_subset(rng: np.random.Generator, n: int, bands: tuple[int, int | None] | None
                 ) -> NDArray[np.int64]:
    """Sorted random band positions: a count in ``bands`` = (min, max or None for all)."""
    if bands is None:
        return np.arange(n)
    lo, hi = bands
    hi = n if hi is None else min(hi, n)
    lo = min(lo, hi)
    k = int(rng.integers(lo, hi + 1))
    return np.sort(rng.choice(n, size=k, replace=False))


def _crop_origin(rng: np.random.Generator, size: tuple[int, int], crop: int | None,
                 random_crop: bool) -> tuple[int, int, int, int]:
    h, w = size
    c = crop or min(h, w)
    if c > h or c > w:
        raise ValueError(f"crop {c} exceeds the patch size {size}")
    ry, rx = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
    y0, x0 = (ry, rx) if random_crop else ((h - c) // 2, (w - c) // 2)
    return y0, y0 + c, x0, x0 + c


def _finish(
    image: NDArray[np.float32],
    label: NDArray[np.uint8],
    wl: NDArray[np.float64],
    rng: np.random.Generator,
    augment: Augment | None,
    lut: NDArray[np.int64],
    fill_value: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if augment is not None:
        image, label, wl = augment(image, label, wl, rng)
    image = np.array(image, dtype=np.float32, copy=True)
    image[~np.isfinite(image)] = fill_value
    desc = encode_wavelengths(wl).astype(np.float32)
    target = lut[np.asarray(label, dtype=np.uint8)]
    return torch.from_numpy(image), torch.from_numpy(desc), torch.from_numpy(target)


class PatchDataset(Dataset[Sample]):
    """Training / validation samples from a :class:`~xsensei.training.patches.PatchStore`.

    ``crop``: output side (263 -> 256 keeps sides divisible by the segmenter's stride);
    ``random_crop=False`` takes the centre. ``bands``: (min, max) band count of the random
    subset per sample (max None = all), or None for all bands in store order. ``augment``:
    an :class:`~xsensei.training.augment.Augment` or None. ``classes``: map labels to a model's
    class indices (see :func:`target_lut`). ``indices`` / ``tag`` restrict the patches used.
    Validation: ``PatchDataset(store, bands=None, augment=None, random_crop=False)``.
    """

    def __init__(
        self,
        store: PatchStore | str | os.PathLike[str],
        *,
        crop: int | None = 256,
        random_crop: bool = True,
        bands: tuple[int, int | None] | None = (3, None),
        augment: Augment | None = Augment(),  # noqa: B008 (frozen, immutable)
        classes: Sequence[str] | None = None,
        seed: int = 0,
        indices: Sequence[int] | None = None,
        tag: str | None = None,
        fill_value: float = 0.0,
    ) -> None:
        self.store = store if isinstance(store, PatchStore) else PatchStore(store)
        self.crop = crop
        self.random_crop = random_crop
        self.bands = bands
        self.augment = augment
        self.lut = target_lut(classes)
        self.seed = seed
        self.epoch = 0
        base = self.store.indices(tag)
        allowed = set(base)
        self.indices = base if indices is None else [int(i) for i in indices if i in allowed]
        self.fill_value = fill_value

    def set_epoch(self, epoch: int) -> None:
        """Samples of a new epoch (other crops, bands and augmentations)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        store_index = self.indices[index]
        rng = _rng(self.seed, self.epoch, index)
        n = self.store.band_count(store_index)
        sel = _band_subset(rng, n, self.bands)
        window = _crop_origin(rng, self.store.patch_size, self.crop, self.random_crop)
        image = self.store.read_image(store_index, bands=sel, window=window)
        label = self.store.read_label(store_index, window=window)
        wl = self.store.descriptors(store_index, bands=sel)
        values, desc, target = _finish(image, label, wl, rng, self.augment, self.lut,
                                       self.fill_value)
        meta = self.store.metadata(store_index)
        return {
            "values": values,
            "descriptors": desc,
            "label": target,
            "index": store_index,
            "label_scheme": meta.get("label_scheme") or SCHEME_FULL,
        }


class SyntheticDataset(Dataset[Sample]):
    """Samples from a synthetic scene generator with ``sample(bandset, index)``.

    The generator API (``xsensei.training.synthetic``): ``SceneGenerator(config, seed)
    .sample(bandset, index)`` returns an object with ``image`` (N, H, W) float32, ``label``
    (H, W) uint8 in store values, ``bandset`` (``.wavelengths_nm`` (N, 3) nm) and ``meta``.
    ``bandsets``: a sequence to pick from, a callable ``rng -> bandset``, or None for
    ``synthetic.random_bandset(rng, n)`` with n drawn from ``bands``. Epoch ``e`` asks the
    generator for scene ``e * length + index``, so every epoch sees new scenes.
    """

    def __init__(
        self,
        generator: Any,
        length: int,
        *,
        bandsets: Sequence[Any] | Callable[[np.random.Generator], Any] | None = None,
        bands: tuple[int, int] = (3, 14),
        crop: int | None = None,
        random_crop: bool = True,
        augment: Augment | None = None,
        classes: Sequence[str] | None = None,
        seed: int = 0,
        fill_value: float = 0.0,
    ) -> None:
        self.generator = generator
        self.length = int(length)
        self.bandsets = bandsets
        self.bands = bands
        self.crop = crop
        self.random_crop = random_crop
        self.augment = augment
        self.lut = target_lut(classes)
        self.seed = seed
        self.epoch = 0
        self.fill_value = fill_value

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _bandset(self, rng: np.random.Generator) -> Any:
        if callable(self.bandsets):
            return self.bandsets(rng)
        if self.bandsets is not None:
            return self.bandsets[int(rng.integers(len(self.bandsets)))]
        from xsensei.training.synthetic import random_bandset  # type: ignore[import-not-found]

        lo, hi = self.bands
        return random_bandset(rng, int(rng.integers(lo, hi + 1)))

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = _rng(self.seed, self.epoch, index)
        scene = self.epoch * self.length + index
        sample = self.generator.sample(self._bandset(rng), scene)
        image = np.asarray(sample.image, dtype=np.float32)
        label = np.asarray(sample.label, dtype=np.uint8)
        wl = np.asarray(sample.bandset.wavelengths_nm, dtype=np.float64)
        y0, y1, x0, x1 = _crop_origin(rng, image.shape[1:], self.crop, self.random_crop)
        values, desc, target = _finish(image[:, y0:y1, x0:x1], label[y0:y1, x0:x1], wl, rng,
                                       self.augment, self.lut, self.fill_value)
        meta = getattr(sample, "meta", None) or {}
        return {
            "values": values,
            "descriptors": desc,
            "label": target,
            "index": scene,
            "label_scheme": meta.get("label_scheme", SCHEME_FULL),
        }


def collate_patches(samples: Sequence[Sample]) -> dict[str, Any]:
    """Stack samples with different band counts: bands padded to the batch's largest N.

    Returns ``values`` (B, N, h, w), ``descriptors`` (B, N, 3) (padding 0, finite),
    ``band_mask`` (B, N) bool (True = real band, as SEnSeI's ``band_mask``), ``label``
    (B, h, w) int64, ``index`` (B,) and ``label_scheme`` (list).
    """
    if not samples:
        raise ValueError("empty batch")
    nmax = max(int(s["values"].shape[0]) for s in samples)
    h, w = samples[0]["values"].shape[1:]
    b = len(samples)
    values = torch.zeros((b, nmax, h, w), dtype=torch.float32)
    desc = torch.zeros((b, nmax, 3), dtype=torch.float32)
    mask = torch.zeros((b, nmax), dtype=torch.bool)
    for i, s in enumerate(samples):
        n = int(s["values"].shape[0])
        if tuple(s["values"].shape[1:]) != (h, w):
            raise ValueError("samples in a batch must share one crop size")
        values[i, :n] = s["values"]
        desc[i, :n] = s["descriptors"]
        mask[i, :n] = True
    return {
        "values": values,
        "descriptors": desc,
        "band_mask": mask,
        "label": torch.stack([s["label"] for s in samples]),
        "index": torch.tensor([int(s["index"]) for s in samples], dtype=torch.int64),
        "label_scheme": [s["label_scheme"] for s in samples],
    }
