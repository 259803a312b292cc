"""Shared fixtures: small seeded models saved as checkpoints, independent of the shipped weights.

An untrained model outputs near-uniform probabilities, so its argmax is decided by noise. The
fixture models get their final 1x1 layer fitted (on frozen random features) to a simple rule on
a demo scene: mean reflectance > 0.3 is cloud, < 0.06 is "shadow", the rest clear. Masks are
then spatially meaningful and not degenerate, which the determinism tests need.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xsensei.demo import DEMO_WAVELENGTHS_NM, demo_scene
from xsensei.descriptors import encode_wavelengths
from xsensei.nn.model import CloudMaskModel
from xsensei.weights.checkpoint import save_model


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Training sets torch's thread count; a test must not leave it changed for the next one
    (float results that tests compare exactly depend on it)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _rule_labels(scene: np.ndarray, pool: int) -> torch.Tensor:
    mean = torch.from_numpy(scene).mean(0)[None, None]
    if pool > 1:
        mean = F.avg_pool2d(mean, pool)
    mean = mean[0, 0]
    labels = torch.zeros(mean.shape, dtype=torch.long)
    labels[mean > 0.3] = 1  # thick_cloud
    labels[mean < 0.06] = 3  # cloud_shadow (dark pixels)
    return labels


def _fit_head(model: CloudMaskModel, head: nn.Conv2d, pool: int, steps: int = 150) -> None:
    """Fit ``head`` (the last 1x1 conv) by logistic regression on standardised features.

    Runs on one torch thread: these tiny steps are 10-30x slower with two threads on a busy
    machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(model, head, pool, steps)
    finally:
        torch.set_num_threads(threads)


def _desc_variants() -> list[np.ndarray]:
    """The demo bands and wider / narrower versions of them (stackstac's centre +- FWHM / 2
    differs from the catalogue's edges): a head fitted on all of them is not thrown by a few nm."""
    centre = DEMO_WAVELENGTHS_NM[:, 1:2]
    half = (DEMO_WAVELENGTHS_NM[:, 2:3] - DEMO_WAVELENGTHS_NM[:, 0:1]) / 2
    out = [DEMO_WAVELENGTHS_NM]
    for f in (0.5, 1.5, 2.5):
        out.append(np.concatenate([centre - f * half, centre, centre + f * half], axis=1))
    return out


def _fit(model: CloudMaskModel, head: nn.Conv2d, pool: int, steps: int) -> None:
    scene = demo_scene(128, seed=1).values
    feats: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda m, i, o: feats.__setitem__("x", i[0].detach()))
    xs = []
    for wl in _desc_variants():
        desc = torch.as_tensor(encode_wavelengths(wl), dtype=torch.float32)
        with torch.no_grad():  # the full forward: for_bands may fuse the head away
            model(torch.from_numpy(scene)[None], desc[None])
        xs.append(feats["x"])
    hook.remove()
    x = torch.cat(xs)
    mu = x.mean((0, 2, 3), keepdim=True)
    sd = x.std((0, 2, 3), keepdim=True)
    sd = sd.clamp_min(1e-2 * float(sd.max()))
    labels = _rule_labels(scene, pool)[None].expand(len(xs), -1, -1)
    lin = nn.Conv2d(x.shape[1], head.out_channels, 1)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    z = (x - mu) / sd
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(lin(z), labels).backward()
        opt.step()
    with torch.no_grad():  # fold the standardisation into the head
        w = lin.weight[:, :, 0, 0] / sd[0, :, 0, 0]
        head.weight.copy_(w[:, :, None, None])
        head.bias.copy_(lin.bias - w @ mu[0, :, 0, 0])


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def deeplab_ckpt(model_dir: Path) -> Path:
    """DeepLabv3+ (default kwargs, output stride 8) fixture model, as a checkpoint path."""
    torch.manual_seed(0)
    model = CloudMaskModel("deeplabv3plus").eval()
    _fit_head(model, model.segmenter.segmentation_head[0], pool=4)
    return save_model(model, model_dir / "deeplab.safetensors")


@pytest.fixture(scope="session")
def pixelnet_ckpt(model_dir: Path) -> Path:
    """Per-pixel (PixelNet) fixture model, as a checkpoint path."""
    torch.manual_seed(0)
    model = CloudMaskModel("pixelnet").eval()
    _fit_head(model, model.segmenter.net[-1], pool=1)
    return save_model(model, model_dir / "pixelnet.safetensors")


@pytest.fixture(scope="session")
def demo_desc() -> np.ndarray:
    """(6, 3) [min, centre, max] nm of the demo scene's bands."""
    return DEMO_WAVELENGTHS_NM.copy()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A real multi-process Dask cluster (2 workers, 1 thread each) for one test module."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):
        yield c
