"""Dask glue: ``map_overlap`` over spatial chunks with a halo, one model per worker process.

The halo equals the model window, so every window touching a chunk is complete inside the
chunk plus halo; scene borders are mirrored inside the task exactly as the numpy path mirrors
the whole scene. The graph carries a small :class:`BlockTask`, never the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from xsensei.engine import runtime
from xsensei.engine.output import NODATA
from xsensei.engine.predict import Partial, predict_block
from xsensei.engine.tiling import WindowSpec
from xsensei.errors import InputError

Output = Literal["mask", "probability", "binary"]

#: Turns a raw ``(N, h, w)`` block into float32 model units with NaN where data are missing.
Prepare = Callable[[NDArray[Any]], NDArray[np.float32]]


@dataclass(frozen=True)
class BlockTask:
    """Everything one chunk task needs; small and picklable."""

    model: runtime.ModelRef
    descriptors: NDArray[np.float32]  # (N, 3) encoded
    class_values: tuple[int, ...]  # mask value of each class
    cloud_classes: tuple[bool, ...]  # which classes count as cloud (binary output)
    spec: WindowSpec
    output: Output
    prepare: Prepare
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 4
    partial: Partial = "fill"
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        runtime.check_options(self.device, self.precision, self.batch_size, self.torch_threads)
        if self.partial not in get_args(Partial):
            allowed = " or ".join(map(repr, get_args(Partial)))
            raise InputError(f"partial must be {allowed}, got {self.partial!r}")

    @property
    def n_classes(self) -> int:
        return len(self.class_values)

    def runner(self) -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
        """A closure running the cached, band-specialised model on numpy batches."""
        runtime.set_torch_threads(self.torch_threads)
        device = runtime.resolve_device(self.device)
        module = runtime.get_runner(self.model, self.descriptors, device, self.precision)
        multiple = runtime.input_multiple(module)
        return lambda batch: runtime.run_batch(module, batch, device, self.precision, multiple)


def first_argmax(probs: NDArray[np.float32]) -> NDArray[np.uint8]:
    """``np.argmax(probs, axis=0)`` (first maximum wins) for a few classes; nodata pixels
    (NaN in every class) come out as 0, for the caller to mark.

    One pass per class over contiguous planes: several times faster than ``np.argmax`` over
    the leading axis of a ``(C, H, W)`` array, which numpy transposes first.
    """
    best = np.zeros(probs.shape[1:], dtype=np.uint8)
    top = probs[0].copy()
    for c in range(1, probs.shape[0]):
        better = np.greater(probs[c], top)
        np.copyto(best, np.uint8(c), where=better)
        np.copyto(top, probs[c], where=better)
    return best


def cloud_first_class(
    probs: NDArray[np.float32], cloud_classes: tuple[bool, ...]
) -> NDArray[np.uint8]:
    """Class index per pixel, deciding cloud vs not-cloud first, by summed probability.

    A plain argmax over clear / thick / thin / shadow calls a pixel clear at P(clear) = 0.4
    although thick and thin cloud together have 0.6: the question users ask first, "is it
    cloud?", would be answered against its own probability. So the group (cloud classes vs the
    rest) with the larger total wins (ties: not cloud), then the likeliest class inside it
    (first maximum wins). Works on any ``(C, ...)`` array; NaN pixels come out as a not-cloud
    class for the caller to mark.
    """
    cloud = np.asarray(cloud_classes, dtype=bool)
    if cloud.all() or not cloud.any():
        return first_argmax(probs)
    idx_c, idx_r = np.flatnonzero(cloud), np.flatnonzero(~cloud)
    p_cloud = np.sum(probs[idx_c], axis=0, dtype=np.float32)
    p_rest = np.sum(probs[idx_r], axis=0, dtype=np.float32)
    best_cloud = idx_c.astype(np.uint8)[first_argmax(probs[idx_c])]
    best_rest = idx_r.astype(np.uint8)[first_argmax(probs[idx_r])]
    return np.where(p_cloud > p_rest, best_cloud, best_rest)


def probabilities_to_output(probs: NDArray[np.float32], task: BlockTask) -> NDArray[Any]:
    """``(C, h, w)`` probabilities -> the requested output for one time step (classes by
    :func:`cloud_first_class`)."""
    if task.output == "probability":
        return probs
    nodata = ~np.isfinite(probs[0])
    best = cloud_first_class(probs, task.cloud_classes)
    if task.output == "mask":
        lut = np.asarray(task.class_values, dtype=np.uint8)
    else:
        lut = np.asarray(task.cloud_classes, dtype=np.uint8)
    out = lut[best]
    out[nodata] = NODATA
    return out


#: Pixels per strip when a per-pixel model runs over a numpy scene.
PIXEL_STRIP = 1 << 18


def predict_numpy(values: NDArray[Any], task: BlockTask) -> NDArray[Any]:
    """The plain numpy path for ``(N, H, W)``: the same windows as any Dask chunking.

    Per-pixel models run strip by strip (~256k pixels each): every pass over the data then
    stays in the CPU cache, 2x faster than whole-scene arrays at 4096^2, and the result is the
    same because no pixel depends on another.
    """
    from xsensei.engine.predict import predict_scene

    rows = max(1, PIXEL_STRIP // max(1, values.shape[-1]))
    if task.spec.size is None and values.shape[-2] > rows:
        parts = [predict_numpy(values[:, y : y + rows], task)
                 for y in range(0, values.shape[-2], rows)]
        return np.concatenate(parts, axis=-2)
    probs = predict_scene(
        task.prepare(values),
        task.runner(),
        task.n_classes,
        task.spec,
        batch_size=task.batch_size,
        partial=task.partial,
    )
    return probabilities_to_output(probs, task)


def fit_chunks(chunks: tuple[int, ...], halo: int) -> tuple[int, ...]:
    """Chunks along one axis that are all >= ``halo`` (Dask needs that), as close as possible.

    Unchanged when they already fit; otherwise regular chunks of ``max(largest, halo)`` with the
    remainder folded into the last one, or a single chunk for a short axis.
    """
    if halo == 0 or len(chunks) == 1 or min(chunks) >= halo:
        return chunks
    size = sum(chunks)
    target = max(max(chunks), halo)
    n = size // target
    if n <= 1:
        return (size,)
    return (target,) * (n - 1) + (size - target * (n - 1),)


def _offsets(chunks: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(v) for v in np.concatenate([[0], np.cumsum(chunks)]))


def _block(
    block: NDArray[Any],
    task: BlockTask,
    y_offsets: tuple[int, ...],
    x_offsets: tuple[int, ...],
    block_info: dict[Any, Any] | None = None,
) -> NDArray[Any]:
    """Run one overlapped ``(T, N, h, w)`` block; return its core's output."""
    assert block_info is not None
    iy, ix = block_info[0]["chunk-location"][-2:]
    halo = task.spec.halo
    ny, nx = len(y_offsets) - 1, len(x_offsets) - 1
    pad = [
        (0, 0),
        (0, 0),
        (halo if iy == 0 else 0, halo if iy == ny - 1 else 0),
        (halo if ix == 0 else 0, halo if ix == nx - 1 else 0),
    ]
    core = ((y_offsets[iy], y_offsets[iy + 1]), (x_offsets[ix], x_offsets[ix + 1]))
    origin = (core[0][0] - halo, core[1][0] - halo)
    scene = (y_offsets[-1], x_offsets[-1])
    runner = task.runner()
    outs = []
    for t in range(block.shape[0]):
        values = task.prepare(block[t])
        if halo:
            values = np.pad(values, pad[1:], mode="symmetric")
        probs = predict_block(
            values,
            origin,
            core,
            scene,
            runner,
            task.n_classes,
            task.spec,
            batch_size=task.batch_size,
            partial=task.partial,
        )
        outs.append(probabilities_to_output(probs, task))
    del values, probs
    runtime.release_memory()
    return np.stack(outs)


def predict_dask(values: da.Array, task: BlockTask) -> da.Array:
    """Lazy output for ``(T, N, Y, X)``: ``(T, C, Y, X)`` probabilities or ``(T, Y, X)`` masks.

    The band axis becomes one chunk (every task needs all bands: memory per task is about
    ``N * (chunk + 2 * halo)^2 * 4`` bytes). Spatial chunks smaller than the halo are merged.
    """
    if values.ndim != 4:
        raise InputError(f"expected (time, band, y, x), got {values.ndim} dims")
    halo = task.spec.halo
    chunks = (
        values.chunks[0],
        (values.shape[1],),
        fit_chunks(values.chunks[2], halo),
        fit_chunks(values.chunks[3], halo),
    )
    if chunks != values.chunks:
        values = values.rechunk(chunks)
    y_offsets, x_offsets = _offsets(chunks[2]), _offsets(chunks[3])
    if task.output == "probability":
        out_chunks = (chunks[0], (task.n_classes,), chunks[2], chunks[3])
        meta = np.empty((0, 0, 0, 0), dtype=np.float32)
        kwargs: dict[str, Any] = {}
    else:
        out_chunks = (chunks[0], chunks[2], chunks[3])
        meta = np.empty((0, 0, 0), dtype=np.uint8)
        kwargs = {"drop_axis": 1}
    return da.map_overlap(
        _block,
        values,
        # An axis in one chunk has no neighbours: _block mirrors its edges itself, and Dask
        # refuses a depth larger than the chunk (a scene smaller than the window).
        depth={0: 0, 1: 0, 2: halo if len(chunks[2]) > 1 else 0,
               3: halo if len(chunks[3]) > 1 else 0},
        boundary="none",
        trim=False,
        allow_rechunk=False,
        align_arrays=False,
        chunks=out_chunks,
        meta=meta,
        dtype=meta.dtype,
        task=task,
        y_offsets=y_offsets,
        x_offsets=x_offsets,
        # a key prefix, not ``name=``: map_blocks takes ``name`` verbatim, so two different
        # masks in one graph (dask.compute(a, b), xr.concat, to_zarr of a Dataset) would share
        # keys and silently return the same blocks; ``token`` appends a hash of the task
        token="xsensei-cloudmask",
        **kwargs,
    )
