"""Shared fixtures: small seeded models saved as checkpoints (no trained weights ship yet).

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


def _fit(model: CloudMaskModel, head: nn.Conv2d, pool: int, steps: int) -> None:
    scene = demo_scene(128, seed=1).values
    desc = torch.as_tensor(encode_wavelengths(DEMO_WAVELENGTHS_NM), dtype=torch.float32)
    runner = model.for_bands(desc)
    feats: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda m, i, o: feats.__setitem__("x", i[0].detach()))
    with torch.no_grad():
        runner(torch.from_numpy(scene)[None])
    hook.remove()
    x = feats["x"]
    mu = x.mean((0, 2, 3), keepdim=True)
    sd = x.std((0, 2, 3), keepdim=True)
    sd = sd.clamp_min(1e-2 * float(sd.max()))
    labels = _rule_labels(scene, pool)[None]
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
    _fit_head(model, model.segmenter.net[4], pool=1)
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
