"""Torch datasets: deterministic per (seed, epoch, index), worker-independent, padded batches."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from xsensei.descriptors import encode_wavelengths
from xsensei.nn.model import CLASSES_2, CLASSES_3, CLASSES_4, CloudMaskModel
from xsensei.sensors import get_sensor
from xsensei.training.augment import Augment
from xsensei.training.datasets import (
    ANY_CLOUD_TARGET,
    PatchDataset,
    SyntheticDataset,
    collate_patches,
    segmentation_loss,
    target_lut,
)
from xsensei.training.patches import Patch, PatchStore, build_store, make_metadata

SIZE = 40
CROP = 32
NO_AUGMENT = Augment(rot90=False, flip=False, band_scale=None, band_salt_pepper=None,
                     pixel_salt_pepper=None, quantise_steps=(), band_shift=None,
                     noise_sigma=None, descriptor_scale=None)


def _wavelengths(sensor: str, names: list[str]) -> np.ndarray:
    info = get_sensor(sensor)
    bands = [info.find_band(n) for n in names]
    return np.array([[b.wl_min_nm, b.wl_center_nm, b.wl_max_nm] for b in bands])


L8 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"]
S2 = ["B02", "B03", "B04", "B08", "B11"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> PatchStore:
    rng = np.random.default_rng(0)
    patches = []
    for i in range(6):
        sensor, names = ("landsat-8", L8) if i % 2 == 0 else ("sentinel-2a", S2)
        label = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=(SIZE, SIZE))
        image = rng.random((len(names), SIZE, SIZE), dtype=np.float32)
        image[:, 0, 0] = np.nan
        patches.append(Patch(image, label, _wavelengths(sensor, names), make_metadata(
            sensor=sensor, scene_id=f"s{i}", tags=["even" if i % 2 == 0 else "odd"],
            band_names=names)))
    return build_store(tmp_path_factory.mktemp("ds") / "p.zarr", patches)


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_samples_are_a_function_of_seed_epoch_index(store: PatchStore) -> None:
    ds = PatchDataset(store, crop=CROP, seed=7)
    first = [ds[i] for i in range(len(ds))]
    again = PatchDataset(store.path, crop=CROP, seed=7)
    for i in range(len(ds)):
        _same(first[i], again[i])
    ds.set_epoch(1)
    assert any(not torch.equal(first[i]["values"].flatten()[:10], ds[i]["values"].flatten()[:10])
               or first[i]["values"].shape != ds[i]["values"].shape for i in range(len(ds)))
    s = first[0]
    n = s["values"].shape[0]
    assert 3 <= n <= 8 and s["values"].shape[1:] == (CROP, CROP)
    assert s["descriptors"].shape == (n, 3) and s["descriptors"].dtype == torch.float32
    assert s["label"].dtype == torch.int64 and torch.isfinite(s["values"]).all()


@pytest.mark.parametrize("workers", [2])
def test_dataloader_workers_give_identical_batches(store: PatchStore, workers: int) -> None:
    ds = PatchDataset(store, crop=CROP, seed=3)
    ds.set_epoch(2)

    def batches(num_workers: int) -> list[dict[str, Any]]:
        loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=num_workers,
                            collate_fn=collate_patches,
                            generator=torch.Generator().manual_seed(11))
        return list(loader)

    single, multi = batches(0), batches(workers)
    assert len(single) == len(multi) == 2
    for a, b in zip(single, multi, strict=True):
        _same(a, b)


def test_validation_samples_read_the_store_unchanged(store: PatchStore) -> None:
    ds = PatchDataset(store, crop=CROP, random_crop=False, bands=None, augment=None)
    off = (SIZE - CROP) // 2
    for i in range(len(store)):
        s = ds[i]
        want = store.read_image(i)[:, off : off + CROP, off : off + CROP]
        np.testing.assert_array_equal(s["values"].numpy(), np.nan_to_num(want, nan=0.0))
        np.testing.assert_array_equal(s["label"].numpy(),
                                      store.read_label(i)[off : off + CROP, off : off + CROP])
        np.testing.assert_array_equal(s["descriptors"].numpy(),
                                      encode_wavelengths(store.descriptors(i)))
    assert [ds.indices, PatchDataset(store, tag="odd").indices] == [list(range(6)), [1, 3, 5]]


def test_band_subsets_keep_values_and_descriptors_together(store: PatchStore) -> None:
    ds = PatchDataset(store, crop=None, bands=(3, 4), augment=None, seed=1)
    for i in range(len(store)):
        s = ds[i]
        assert s["values"].shape[0] in (3, 4)
        full = np.nan_to_num(store.read_image(i))
        enc = encode_wavelengths(store.descriptors(i))
        for v, d in zip(s["values"].numpy(), s["descriptors"].numpy(), strict=True):
            j = int(np.flatnonzero((enc == d).all(1))[0])
            np.testing.assert_array_equal(v, full[j])


def test_rotation_and_flip_move_labels_with_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    label = rng.integers(0, 4, size=(SIZE, SIZE)).astype(np.uint8)
    image = np.stack([label.astype(np.float32), rng.random((SIZE, SIZE), dtype=np.float32),
                      rng.random((SIZE, SIZE), dtype=np.float32)])
    store = build_store(tmp_path / "r.zarr", [Patch(image, label, _wavelengths("landsat-8",
                                                                               L8[:3]))])
    geometric = Augment(band_scale=None, band_salt_pepper=None, pixel_salt_pepper=None,
                        quantise_steps=(), band_shift=None, noise_sigma=None,
                        descriptor_scale=None)
    ds = PatchDataset(store, crop=CROP, bands=None, augment=geometric)
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        s = ds[0]
        np.testing.assert_array_equal(s["values"][0].numpy(), s["label"].numpy().astype(np.float32))
        seen.add(s["values"][1].numpy().tobytes())
    assert len(seen) > 4  # crops, turns and mirrors differ between epochs


def test_photometric_augmentations_stay_in_the_paper_ranges() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((5, 16, 16), dtype=np.float32) + 0.5
    wl = _wavelengths("sentinel-2a", S2)
    scale_only = Augment(rot90=False, flip=False, p_band_scale=1.0, band_salt_pepper=None,
                         pixel_salt_pepper=None, quantise_steps=(), band_shift=None,
                         noise_sigma=None, p_descriptor_scale=1.0)
    for seed in range(5):
        out, _, wl_out = scale_only(image, np.zeros((16, 16), np.uint8), wl,
                                      np.random.default_rng(seed))
        ratio = out / image
        assert np.allclose(ratio, ratio[:, :1, :1], rtol=1e-5)  # one factor per band
        assert (ratio >= 0.95 - 1e-6).all() and (ratio <= 1.05 + 1e-6).all()
        assert not np.array_equal(wl_out, wl)
        assert (wl_out >= 0.99 * wl.min(1, keepdims=True)).all()
        assert (wl_out <= 1.01 * wl.max(1, keepdims=True)).all()
        assert (np.diff(wl_out, axis=-1) >= 0).all()  # still [min, centre, max]
        encode_wavelengths(wl_out)
    shift_noise = Augment(rot90=False, flip=False, band_scale=None, band_salt_pepper=None,
                          pixel_salt_pepper=None, quantise_steps=(), p_band_shift=1.0,
                          p_noise=1.0, noise_sigma=0.02, descriptor_scale=None)
    out, _, _ = shift_noise(np.zeros((3, 64, 64), np.float32), np.zeros((64, 64), np.uint8),
                            wl[:3], np.random.default_rng(1))
    means = out.mean(axis=(1, 2))
    assert np.all(np.abs(means) < 0.05 + 0.01)
    assert np.allclose(out.std(axis=(1, 2)), 0.02, rtol=0.1)
    pepper = Augment(rot90=False, flip=False, band_scale=None, p_band_salt_pepper=1.0,
                     band_salt_pepper=0.01, pixel_salt_pepper=None, quantise_steps=(),
                     band_shift=None, noise_sigma=None, descriptor_scale=None)
    out, _, _ = pepper(np.full((4, 100, 100), 0.5, np.float32), np.zeros((100, 100), np.uint8),
                       wl[:4], np.random.default_rng(2))
    assert 0.005 < np.mean(out == 1.1) < 0.015 and 0.005 < np.mean(out == 0.0) < 0.015


def test_targets_for_model_class_sets() -> None:
    labels = np.array([0, 1, 2, 3, 4, 255])
    assert target_lut(None)[labels].tolist() == [0, 1, 2, 3, 4, 255]
    assert target_lut(CLASSES_2)[labels].tolist() == [0, 1, 1, 0, 1, 255]
    assert target_lut(CLASSES_3)[labels].tolist() == [0, 1, 1, 2, 1, 255]
    assert target_lut(CLASSES_4)[labels].tolist() == [0, 1, 2, 3, ANY_CLOUD_TARGET, 255]


def test_generic_cloud_label_scores_the_summed_cloud_probability() -> None:
    """A 4-class model learns "some cloud" from a cloud label of unknown thickness:
    -log(p(thick) + p(thin)); every other pixel is plain cross-entropy, 255 ignored."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    target[0, 0, 0] = 255
    assert torch.equal(segmentation_loss(logits, target, CLASSES_4),
                       F.cross_entropy(logits, target, ignore_index=255))
    target[1, 1, 1] = target[0, 2, 2] = ANY_CLOUD_TARGET
    p = logits.softmax(1)
    generic = -(torch.log(p[1, 1, 1, 1] + p[1, 2, 1, 1]) + torch.log(p[0, 1, 2, 2] + p[0, 2, 2, 2]))
    plain = F.cross_entropy(logits, target.masked_fill(target == ANY_CLOUD_TARGET, 255),
                            ignore_index=255, reduction="sum")
    total = segmentation_loss(logits, target, CLASSES_4, reduction="sum")
    torch.testing.assert_close(total, plain + generic)
    torch.testing.assert_close(segmentation_loss(logits, target, CLASSES_4), total / 17)
    # a confident thick-or-thin split costs nothing either way
    sure = torch.full((1, 4, 1, 1), -20.0)
    sure[0, 2] = 20.0
    assert float(segmentation_loss(sure, torch.tensor([[[ANY_CLOUD_TARGET]]]), CLASSES_4)) < 1e-6


def test_collated_batch_runs_sensei_with_the_band_mask(store: PatchStore) -> None:
    ds = PatchDataset(store, crop=CROP, seed=0, classes=CLASSES_2)
    batch = collate_patches([ds[i] for i in range(4)])
    counts = [ds[i]["values"].shape[0] for i in range(4)]
    n = max(counts)
    assert batch["values"].shape == (4, n, CROP, CROP)
    assert batch["band_mask"].sum(1).tolist() == counts
    assert set(batch["label"].unique().tolist()) <= {0, 1, 255}
    torch.manual_seed(0)
    model = CloudMaskModel("pixelnet", classes=CLASSES_2).eval()
    with torch.no_grad():
        logits = model(batch["values"], batch["descriptors"], batch["band_mask"])
        alone = model(ds[1]["values"][None], ds[1]["descriptors"][None])
    assert logits.shape == (4, 2, CROP, CROP)
    torch.testing.assert_close(logits[1:2], alone, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# synthetic generator wrapper (a stand-in with the agreed API: sample(bandset, index))


@dataclass(frozen=True)
class TinyBandset:
    name: str
    wavelengths_nm: np.ndarray


@dataclass
class TinySample:
    image: np.ndarray
    label: np.ndarray
    bandset: TinyBandset
    meta: dict[str, Any]


class TinySceneGenerator:
    """Deterministic per (seed, index): bright squares labelled thick cloud on dark ground."""

    def __init__(self, config: Any = None, seed: int = 0) -> None:
        self.seed = seed
        self.calls: list[int] = []

    def sample(self, bandset: TinyBandset, index: int) -> TinySample:
        self.calls.append(index)
        rng = np.random.default_rng([self.seed, index])
        label = np.zeros((24, 24), np.uint8)
        y, x = rng.integers(0, 16, size=2)
        label[y : y + 8, x : x + 8] = 1
        n = len(bandset.wavelengths_nm)
        image = (0.05 + 0.6 * label + 0.02 * rng.standard_normal((n, 24, 24))).astype(np.float32)
        return TinySample(image, label, bandset, {"index": index})


def test_synthetic_dataset_is_deterministic_and_collates() -> None:
    bandsets = [TinyBandset("l8", _wavelengths("landsat-8", L8)),
                TinyBandset("s2", _wavelengths("sentinel-2a", S2))]
    ds = SyntheticDataset(TinySceneGenerator(seed=4), length=6, bandsets=bandsets, crop=16,
                          augment=Augment(), seed=9)
    twin = SyntheticDataset(TinySceneGenerator(seed=4), length=6, bandsets=bandsets, crop=16,
                            augment=Augment(), seed=9)
    for i in range(6):
        _same(ds[i], twin[i])
    assert {ds[i]["values"].shape[0] for i in range(6)} == {5, 8}
    ds.set_epoch(3)
    assert ds[2]["index"] == 3 * 6 + 2  # every epoch asks for new scenes
    loader = DataLoader(ds, batch_size=3, num_workers=0, collate_fn=collate_patches)
    batch = next(iter(loader))
    assert batch["values"].shape[:2] == (3, 8) and batch["label"].shape == (3, 16, 16)
    picked = SyntheticDataset(TinySceneGenerator(), length=2,
                              bandsets=lambda rng: bandsets[0], classes=CLASSES_2)
    assert picked[0]["values"].shape == (8, 24, 24)
    assert set(picked[0]["label"].unique().tolist()) <= {0, 1}


def test_wrapper_runs_the_real_scene_generator() -> None:
    """The agreed API, on ``xsensei.training.synthetic`` when it is there (small, fast scenes)."""
    synthetic = pytest.importorskip("xsensei.training.synthetic")
    config = synthetic.SyntheticConfig(size=32, library="parametric")

    def make() -> SyntheticDataset:
        return SyntheticDataset(synthetic.SceneGenerator(config, seed=0), 3, bands=(3, 6),
                                crop=24, augment=Augment(), classes=CLASSES_3, seed=1)

    a, b = make(), make()
    batch = collate_patches([a[i] for i in range(3)])
    assert batch["values"].shape[2:] == (24, 24) and torch.isfinite(batch["values"]).all()
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2, 255}
    for i in range(3):
        _same(a[i], b[i])


def test_dataset_pickles_for_spawned_workers(store: PatchStore) -> None:
    ds = PatchDataset(store, crop=CROP, seed=2)
    ds.set_epoch(4)
    _same(pickle.loads(pickle.dumps(ds))[1], ds[1])
