"""numpy in, class probabilities out: the model run over scene-anchored windows of one block.

Everything here is a pure function of the block and its scene position, which is what makes
Dask results independent of chunking (see :mod:`xsensei.engine.tiling`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from xsensei.engine.tiling import WindowSpec, blend_weights, window_starts
from xsensei.errors import InputError

#: Runs the model on a batch ``(B, N, h, w)`` float32 and returns probabilities ``(B, C, h, w)``.
Runner = Callable[[NDArray[np.float32]], NDArray[np.float32]]
Partial = Literal["fill", "nodata"]


def valid_pixels(values: NDArray[np.floating], partial: Partial = "fill") -> NDArray[np.bool_]:
    """Pixels to label: any band finite (``partial="fill"``) or all finite (``"nodata"``)."""
    finite = np.isfinite(values)
    return finite.any(axis=0) if partial == "fill" else finite.all(axis=0)


def fill_missing_window(window: NDArray[np.float32]) -> NDArray[np.float32]:
    """Replace non-finite values of each band by that band's mean over the window.

    A band missing everywhere in the window takes the mean of the other bands. The fill
    depends on the window alone, so it is the same under any chunking.
    """
    finite = np.isfinite(window)
    if finite.all():
        return window
    out = window.copy()
    counts = finite.sum(axis=(1, 2))
    sums = np.where(finite, window, 0).sum(axis=(1, 2), dtype=np.float64)
    have = counts > 0
    fallback = sums[have].sum() / counts[have].sum() if have.any() else 0.0
    means = np.where(have, sums / np.maximum(counts, 1), fallback).astype(np.float32)
    for b in np.flatnonzero(~finite.all(axis=(1, 2))):
        out[b][~finite[b]] = means[b]
    return out


def fill_missing_pixelwise(values: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per-pixel fill for per-pixel models: a missing band takes the pixel's mean of the others."""
    finite = np.isfinite(values)
    if finite.all():
        return values
    counts = finite.sum(axis=0)
    mean = np.where(finite, values, 0).sum(axis=0) / np.maximum(counts, 1)
    return np.where(finite, values, mean[None]).astype(np.float32)


def predict_block(
    block: NDArray[np.float32],
    origin: tuple[int, int],
    core: tuple[tuple[int, int], tuple[int, int]],
    scene_shape: tuple[int, int],
    runner: Runner,
    classes: int,
    spec: WindowSpec,
    *,
    batch_size: int = 4,
    partial: Partial = "fill",
) -> NDArray[np.float32]:
    """Probabilities ``(classes, core_h, core_w)`` for the ``core`` region of a scene.

    ``block`` is ``(N, h, w)`` in model units (NaN = missing) whose pixel ``[0, 0]`` sits at
    scene coordinates ``origin`` (negative inside a reflected border). ``core`` is
    ``((y0, y1), (x0, x1))`` in scene coordinates and must lie inside the block with a halo of
    ``spec.halo``. Nodata pixels come back as NaN in every class.
    """
    (cy0, cy1), (cx0, cx1) = core
    oy, ox = origin
    h, w = cy1 - cy0, cx1 - cx0
    core_vals = block[:, cy0 - oy : cy1 - oy, cx0 - ox : cx1 - ox]
    valid = valid_pixels(core_vals, partial)
    if not valid.any():
        return np.full((classes, h, w), np.nan, dtype=np.float32)
    if spec.size is None:
        probs = runner(fill_missing_pixelwise(core_vals)[None])[0]
        return np.where(valid[None], probs, np.float32(np.nan))

    size = spec.size
    need = (cy0 - size + 1 - oy, cy1 + size - 1 - oy, cx0 - size + 1 - ox, cx1 + size - 1 - ox)
    if need[0] < 0 or need[2] < 0 or need[1] > block.shape[1] or need[3] > block.shape[2]:
        raise InputError(
            f"block of shape {block.shape[1:]} at {origin} lacks the {size}-pixel halo around "
            f"core {core}"
        )
    weights = blend_weights(spec)
    acc = np.zeros((classes, h, w), dtype=np.float64)
    wsum = np.zeros((h, w), dtype=np.float64)
    ys = window_starts(cy0, cy1, scene_shape[0], spec)
    xs = window_starts(cx0, cx1, scene_shape[1], spec)

    pending: list[tuple[int, int, NDArray[np.float32]]] = []

    def flush() -> None:
        batch = np.stack([p[2] for p in pending])
        if len(pending) < batch_size:
            # Every call sees batch_size windows (the last one repeated), so a window's
            # probabilities never depend on how many others share its batch, i.e. on the
            # chunking: CPU kernels take another path for a batch of one (~1e-6 apart).
            fill = np.repeat(batch[-1:], batch_size - len(pending), axis=0)
            batch = np.concatenate([batch, fill])
        probs = runner(batch)[: len(pending)]
        for (wy, wx, _), p in zip(pending, probs, strict=True):
            # Intersection of window [wy, wy+size) x [wx, wx+size) with the core.
            y0, y1 = max(wy, cy0), min(wy + size, cy1)
            x0, x1 = max(wx, cx0), min(wx + size, cx1)
            wwin = weights[y0 - wy : y1 - wy, x0 - wx : x1 - wx]
            acc[:, y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] += (
                p[:, y0 - wy : y1 - wy, x0 - wx : x1 - wx] * wwin
            )
            wsum[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] += wwin
        pending.clear()

    for wy in ys:
        for wx in xs:
            win = block[:, wy - oy : wy - oy + size, wx - ox : wx - ox + size]
            if not np.isfinite(win).any():
                continue  # all-nodata window: nothing to predict
            pending.append((wy, wx, fill_missing_window(win)))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    with np.errstate(invalid="ignore", divide="ignore"):
        blended = (acc / wsum).astype(np.float32)
    return np.where(valid[None], blended, np.float32(np.nan))


def pad_scene(values: NDArray[np.float32], halo: int) -> NDArray[np.float32]:
    """Mirror the scene borders (``symmetric``, as Dask's ``reflect`` boundary does)."""
    if halo == 0:
        return values
    pad = [(0, 0)] * (values.ndim - 2) + [(halo, halo), (halo, halo)]
    return np.pad(values, pad, mode="symmetric")


def predict_scene(
    values: NDArray[np.float32],
    runner: Runner,
    classes: int,
    spec: WindowSpec,
    *,
    batch_size: int = 4,
    partial: Partial = "fill",
) -> NDArray[np.float32]:
    """Whole-scene numpy path: ``(N, H, W)`` model units -> ``(classes, H, W)`` probabilities."""
    _, height, width = values.shape
    halo = spec.halo
    padded = pad_scene(values, halo)
    return predict_block(
        padded,
        (-halo, -halo),
        ((0, height), (0, width)),
        (height, width),
        runner,
        classes,
        spec,
        batch_size=batch_size,
        partial=partial,
    )
