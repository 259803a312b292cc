"""Stream a lazy mask into a zarr v3 store, chunk by chunk, with a resumable done-manifest.

Store layout (``<store>/``)::

    zarr.json                 root group; attrs["xsensei_store"] records the grid for resume
    <name>/                   the mask (uint8, fill value = nodata 255, CF flag attrs)
    y/ x/ time/ ...           coordinates; ``spatial_ref`` carries the CRS and GeoTransform
    cloud_fraction/           (time,) float32, written last (NaN until the write completes)
    _xsensei/done/            done-manifest: uint8, one element per mask chunk, each element its
                              own zarr chunk (= its own file); 1 once that mask chunk is stored

Zarr does not write chunks equal to the fill value, so the presence of a chunk file proves
nothing; the manifest element is written only after the chunk's data, by the same Dask task, so
"marked done" implies "data stored". Every task writes distinct files (its mask chunk, its
manifest element), which is safe with any number of threads or worker processes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr

from xsensei.engine.output import spatial_dims
from xsensei.errors import InputError, XSenseiError

__all__ = ["ResumeMismatchError", "ZarrWriteReport", "to_zarr"]

#: Version of the store layout written here; bump when resume could misread an older store.
STORE_FORMAT = 1
_META_KEY = "xsensei_store"
_DONE_PATH = "_xsensei/done"
_FRACTION = "cloud_fraction"
_NODATA = 255
_CLOUD_VALUES = (1, 2)
_DEFAULT_CHUNK = {"time": 1, "y": 1024, "x": 1024}
_COUNT_BATCH = 64  # stored chunks recounted per task on resume


class ResumeMismatchError(XSenseiError, ValueError):
    """``resume=True`` found a store whose grid, model, bands or inference settings differ from
    the mask being written."""


@dataclass(frozen=True)
class ZarrWriteReport:
    """What :func:`to_zarr` did: ``chunks_written + chunks_skipped == chunks_total``."""

    path: Path
    chunks_total: int
    chunks_written: int
    chunks_skipped: int


def to_zarr(
    mask: xr.DataArray,
    store: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    compressor_level: int = 3,
    progress: bool = False,
    scheduler: Any = None,
) -> ZarrWriteReport:
    """Write ``mask`` to a local zarr v3 store, one Dask task per chunk; resumable.

    Each task computes one block of the mask, writes it into its zarr chunk and then marks it
    done in the store's manifest, so an interrupted write (crash, killed job, model error) is
    finished with ``resume=True`` without re-running the model on chunks already stored.

    - The result reopens with ``xr.open_zarr(store, decode_coords="all")`` as uint8 (nodata is
      the zarr fill value plus a ``nodata`` attribute, not a CF ``_FillValue`` that would turn
      it into float), with the CRS, transform, flag attributes and coordinates.
    - zarr chunks are the mask's Dask chunks. Irregular Dask chunks (sizes differing other than
      a smaller last chunk) are rechunked to the largest chunk size of that dimension, because
      zarr needs a regular grid and each task must own whole zarr chunks.
    - A uint8 mask with a ``time`` dim (or any one dim besides y/x) also gets
      ``cloud_fraction`` (time,): the fraction of valid (non-255) pixels with value 1 or 2,
      counted from the same blocks as they are written (chunks skipped on resume are recounted
      from the store, which is cheap).
    - Object-dtype coordinates (stackstac per-item metadata) are stored as strings, or as
      floats when they hold only numbers and None, since zarr cannot store Python objects.

    ``overwrite=True`` replaces an existing zarr store (it refuses to delete a path that is
    not a zarr store). ``resume=True`` on a missing store simply writes it. ``scheduler`` is
    anything ``dask.compute`` accepts (``"threads"``, ``"processes"``, a
    ``distributed.Client``); None uses the current default (a default Client included).
    """
    if not isinstance(mask, xr.DataArray):
        raise TypeError(f"mask must be an xarray.DataArray, got {type(mask).__name__}")
    if overwrite and resume:
        raise InputError("pass either overwrite=True or resume=True, not both")
    if not isinstance(compressor_level, int) or not 1 <= compressor_level <= 22:
        raise InputError(f"compressor_level must be a zstd level 1..22, got {compressor_level!r}")
    if mask.ndim == 0 or 0 in mask.shape:
        raise InputError(f"cannot write an empty mask (sizes {dict(mask.sizes)})")

    path = Path(os.fspath(store)).expanduser().absolute()
    name = str(mask.name) if mask.name is not None else "cloud_mask"
    if name in mask.coords or name in (_FRACTION, "spatial_ref"):
        raise InputError(f"mask name {name!r} clashes with a coordinate; rename the mask")
    data = _regular_dask(mask)
    mask = mask.copy(data=data)
    zchunks = tuple(c[0] for c in data.chunks)
    numblocks = data.numblocks
    total = int(np.prod(numblocks))
    frac_dim = _fraction_dim(mask)
    counting = frac_dim is not None
    time_axis = mask.dims.index(frac_dim) if frac_dim is not None else None

    if path.exists() or path.is_symlink():
        if overwrite:
            _remove_store(path)
        elif not resume:
            raise FileExistsError(
                f"{path} already exists; pass overwrite=True to replace it or resume=True to "
                "finish an interrupted write of the same mask"
            )
    if resume and path.exists():
        _check_resumable(path, mask, name, zchunks)
        done = _read_done(path, numblocks)
    else:
        path.mkdir(parents=True)  # claims the path: raises if another writer got there first
        try:
            _create_store(path, mask, name, zchunks, compressor_level, frac_dim)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)  # ours, half-made: never leave it behind
            raise
        done = np.zeros(numblocks, dtype=bool)

    missing = [idx for idx in np.ndindex(*numblocks) if not done[idx]]
    skipped = [idx for idx in np.ndindex(*numblocks) if done[idx]]
    # graph optimisation fuses tasks and drops dask.annotate() restrictions (resources={"GPU":
    # 1} on a mixed cluster): keep an annotated graph as it is
    annotated = _annotated(data)
    blocks = data.to_delayed(optimize_graph=not annotated) if missing else None
    write = dask.delayed(_write_block, pure=False)
    count = dask.delayed(_count_stored, pure=False)
    token = uuid.uuid4().hex
    # one key per chunk index: the dashboard shows "xsensei-write" tasks, and Dask breaks
    # ties between ready writes by chunk index instead of by random keys
    tasks = [
        write(blocks[idx], str(path), name, token, _region(idx, data.chunks), idx, time_axis,
              dask_key_name=(f"xsensei-write-{token}", *idx))
        for idx in missing
    ]
    if counting:
        regions = [_region(idx, data.chunks) for idx in skipped]
        tasks += [
            count(str(path), name, token, regions[i : i + _COUNT_BATCH], time_axis)
            for i in range(0, len(regions), _COUNT_BATCH)
        ]

    try:
        results = _compute(tasks, scheduler, progress, path, optimize=not annotated)
    except BaseException as err:
        try:
            stored: Any = int(_read_done(path, numblocks).sum())
        except Exception:  # the note must never hide the original error
            stored = "some"
        err.add_note(
            f"xsensei.to_zarr: {stored} of {total} chunks of {path} are stored and recorded "
            "done; call to_zarr(..., resume=True) to write only the others"
        )
        raise

    if frac_dim is not None:
        _write_fraction(path, mask.sizes[frac_dim], results)
    return ZarrWriteReport(path, total, len(missing), len(skipped))


def _fraction_dim(mask: xr.DataArray) -> str | None:
    """The dim a cloud fraction is stored along: the one non-spatial dim of a uint8 mask."""
    if mask.dtype != np.uint8:
        return None
    try:
        y_dim, x_dim = spatial_dims(mask)
    except InputError:
        return None
    lead = [str(d) for d in mask.dims if d not in (y_dim, x_dim)]
    return lead[0] if len(lead) == 1 else None


# --- chunk grid ---------------------------------------------------------------------------


def _is_regular(chunks: tuple[int, ...]) -> bool:
    return all(c == chunks[0] for c in chunks[:-1]) and chunks[-1] <= chunks[0]


def _regular_dask(mask: xr.DataArray) -> da.Array:
    """The mask's Dask array with a regular chunk grid (zarr's), chunking numpy masks."""
    data = mask.data
    if not isinstance(data, da.Array):
        chunks = tuple(
            min(_DEFAULT_CHUNK.get(str(d), n), n)
            for d, n in zip(mask.dims, mask.shape, strict=True)
        )
        return da.from_array(np.asarray(data), chunks=chunks)
    fix = {ax: max(c) for ax, c in enumerate(data.chunks) if not _is_regular(c)}
    return data.rechunk(fix) if fix else data


def _region(idx: tuple[int, ...], chunks: tuple[tuple[int, ...], ...]) -> tuple[slice, ...]:
    starts = [sum(c[:i]) for c, i in zip(chunks, idx, strict=True)]
    return tuple(slice(s, s + c[i]) for s, c, i in zip(starts, chunks, idx, strict=True))


# --- store creation, checks, manifest -----------------------------------------------------


def _remove_store(path: Path) -> None:
    """Delete an existing zarr store, refusing anything that does not look like one."""
    if path.is_dir() and not path.is_symlink():
        if (path / "zarr.json").is_file() or (path / ".zgroup").is_file():
            shutil.rmtree(path)
            return
        if not any(path.iterdir()):
            path.rmdir()
            return
    raise FileExistsError(
        f"{path} exists but is not a zarr store; overwrite=True only replaces zarr stores, "
        "remove it yourself if it should go"
    )


def _sanitized_coord(coord: xr.Variable) -> xr.Variable:
    """Object coords (stackstac item metadata) as str or float, which zarr can store."""
    if coord.dtype.kind == "U":
        return coord.astype(object)  # variable-length strings: in the zarr v3 spec
    if coord.dtype != object:
        return coord
    values = coord.values.ravel()
    if all(isinstance(v, str) for v in values):
        return coord
    if all(
        v is None or (isinstance(v, int | float | np.number) and not isinstance(v, bool))
        for v in values
    ):
        return coord.copy(
            data=np.array([np.nan if v is None else float(v) for v in values]).reshape(coord.shape)
        )
    strings = ["" if v is None else str(v) for v in values]
    return coord.copy(data=np.array(strings, dtype=object).reshape(coord.shape))


def _store_meta(mask: xr.DataArray, name: str, zchunks: tuple[int, ...]) -> dict[str, Any]:
    return {
        "format": STORE_FORMAT,
        "writer": "xsensei.io.zarr.to_zarr",
        "variable": name,
        "dims": [str(d) for d in mask.dims],
        "shape": [int(n) for n in mask.shape],
        "chunks": [int(c) for c in zchunks],
        "dtype": str(mask.dtype),
        "model": str(mask.attrs.get("model", "")),
        "model_version": str(mask.attrs.get("model_version", "")),
        # what else changes the mask (cloudmask's attrs); stores written before these keys
        # existed resume without their check
        "input_bands": str(mask.attrs.get("input_bands", "")),
        "input_wavelengths_nm": str(mask.attrs.get("input_wavelengths_nm", "")),
        "input_scaling": str(mask.attrs.get("input_scaling", "")),
        "inference": str(mask.attrs.get("inference", "")),
    }


#: ``_store_meta`` keys that older stores may lack.
_LATER_KEYS = frozenset({"input_bands", "input_wavelengths_nm", "input_scaling", "inference"})


def _create_store(
    path: Path,
    mask: xr.DataArray,
    name: str,
    zchunks: tuple[int, ...],
    level: int,
    frac_dim: str | None,
) -> None:
    """Write metadata and coordinates (not the mask data) plus an empty done-manifest."""
    import rioxarray  # noqa: F401  (registers .rio)
    from zarr.codecs import BloscCodec, ZstdCodec

    attrs = dict(mask.attrs)
    encoding: dict[str, Any] = {"chunks": zchunks}
    if mask.dtype.kind in "iub":
        nodata = attrs.pop("_FillValue", None)
        attrs.pop("missing_value", None)
        if nodata is None or np.isnan(nodata):
            nodata = _NODATA if mask.dtype == np.uint8 else None
        if nodata is not None:
            encoding["fill_value"] = mask.dtype.type(nodata)
            attrs["nodata"] = int(nodata)
        encoding["compressors"] = [ZstdCodec(level=level)]  # shuffle is a no-op on bytes
    else:
        attrs.setdefault("_FillValue", np.nan)
        encoding["fill_value"] = np.nan
        encoding["compressors"] = [BloscCodec(cname="zstd", clevel=level, shuffle="shuffle")]

    placeholder = da.zeros(mask.shape, chunks=zchunks, dtype=mask.dtype)
    coords = {k: _sanitized_coord(v.variable.compute()) for k, v in mask.coords.items()}
    var = xr.DataArray(placeholder, dims=mask.dims, coords=coords, attrs=attrs, name=name)
    for c in var.coords.values():
        c.encoding = {}
    crs = mask.rio.crs
    if crs is not None:
        spatial_ref = mask.coords.get("spatial_ref")
        transform = spatial_ref.attrs.get("GeoTransform") if spatial_ref is not None else None
        var = var.rio.write_crs(crs)
        if transform is not None:
            var.coords["spatial_ref"].attrs["GeoTransform"] = transform
        var.encoding = {}
        encoding["grid_mapping"] = "spatial_ref"
    ds = var.to_dataset()
    ds.attrs = {_META_KEY: _store_meta(mask, name, zchunks)}
    encodings = {name: encoding}
    if frac_dim is not None:
        ds[_FRACTION] = xr.DataArray(
            da.zeros(mask.sizes[frac_dim], chunks=-1, dtype=np.float32),
            dims=frac_dim,
            attrs={
                "long_name": "cloud fraction of valid pixels",
                "units": "1",
                "comment": f"pixels of {name} with value 1 or 2 / pixels not equal to 255",
            },
        )
        encodings[_FRACTION] = {"fill_value": np.nan, "_FillValue": np.nan}

    with warnings.catch_warnings():
        # zarr-python flags consolidated metadata as not (yet) in the v3 spec; xarray relies on it
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        ds.to_zarr(
            path, mode="w-", compute=False, consolidated=False, zarr_format=3, encoding=encodings
        )
        manifest = zarr.open_group(path, mode="r+").create_group("_xsensei")
        manifest.attrs["description"] = (
            f"done-manifest of {name}: 1 where that zarr chunk is written (xsensei.io.zarr)"
        )
        manifest.create_array(
            "done",
            shape=mask.data.numblocks,
            chunks=(1,) * mask.ndim,
            dtype="uint8",
            fill_value=0,
            compressors=None,
            dimension_names=[f"{d}_chunk" for d in mask.dims],
        )
        zarr.consolidate_metadata(path)


def _read_done(path: Path, numblocks: tuple[int, ...]) -> np.ndarray:
    done = np.asarray(zarr.open_array(path, path=_DONE_PATH, mode="r")[...]) == 1
    if done.shape != tuple(numblocks):
        raise ResumeMismatchError(
            f"the done-manifest of {path} has shape {done.shape}, expected {tuple(numblocks)}"
        )
    return done


def _check_resumable(path: Path, mask: xr.DataArray, name: str, zchunks: tuple[int, ...]) -> None:
    """Raise ResumeMismatchError unless the store holds the same grid, chunks and model."""
    import rioxarray  # noqa: F401  (registers .rio)

    try:
        meta = dict(zarr.open_group(path, mode="r").attrs).get(_META_KEY)
    except Exception as err:
        raise ResumeMismatchError(
            f"cannot resume {path}: it is not a readable zarr store ({err}); "
            "pass overwrite=True to replace it"
        ) from err
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise ResumeMismatchError(
            f"cannot resume {path}: it was not written by xsensei.io.zarr.to_zarr "
            f"(format {STORE_FORMAT}); pass overwrite=True to replace it"
        )
    expected = _store_meta(mask, name, zchunks)
    problems = [
        f"{key}: store has {meta.get(key)!r}, mask has {expected[key]!r}"
        for key in expected
        if key != "writer" and not (key in _LATER_KEYS and key not in meta)
        and meta.get(key) != expected[key]
    ]
    if not problems:
        stored = xr.open_zarr(path, decode_coords="all", consolidated=True)
        for dim in mask.dims:
            if dim in mask.indexes and not _same_values(stored[dim].values, mask[dim].values):
                problems.append(f"coordinate {dim!r} values differ")
        if stored[name].rio.crs != mask.rio.crs:
            problems.append(f"CRS: store has {stored[name].rio.crs}, mask has {mask.rio.crs}")
    if problems:
        hint = ""
        if any(p.startswith("chunks") for p in problems):
            hint = f" (rechunk the mask to {tuple(meta.get('chunks', ()))} to match)"
        raise ResumeMismatchError(
            f"cannot resume {path}: it holds another mask (grid, model or settings){hint}:\n  - "
            + "\n  - ".join(problems)
            + "\npass overwrite=True to replace the store"
        )


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "M" or b.dtype.kind == "M":
        a, b = a.astype("datetime64[ns]"), b.astype("datetime64[ns]")
    return a.shape == b.shape and bool(np.array_equal(a, b))


# --- tasks -------------------------------------------------------------------------------


def _counts(block: np.ndarray, time_axis: int | None) -> np.ndarray | None:
    """(2, n_time) int64: valid and cloud pixel counts per time step of a block."""
    if time_axis is None:
        return None
    axes = tuple(a for a in range(block.ndim) if a != time_axis)
    valid = np.count_nonzero(block != _NODATA, axis=axes)
    cloud = np.count_nonzero(np.isin(block, _CLOUD_VALUES), axis=axes)
    return np.stack([valid, cloud]).astype(np.int64)


@functools.lru_cache(maxsize=16)
def _array(path: str, name: str, token: str) -> zarr.Array:
    """Open a store array once per process and write; ``token`` is unique per write call so a
    replaced store is never written through a stale handle."""
    return zarr.open_array(path, path=name, mode="r+")


def _write_block(
    block: np.ndarray,
    path: str,
    name: str,
    token: str,
    region: tuple[slice, ...],
    index: tuple[int, ...],
    time_axis: int | None,
) -> list[tuple[int, np.ndarray]]:
    """Store one computed block, then record it done (in that order); return its counts."""
    _array(path, name, token)[region] = block
    counts = _counts(np.asarray(block), time_axis)
    _array(path, _DONE_PATH, token)[index] = 1
    return [] if counts is None or time_axis is None else [(region[time_axis].start, counts)]


def _count_stored(
    path: str, name: str, token: str, regions: list[tuple[slice, ...]], time_axis: int
) -> list[tuple[int, np.ndarray]]:
    """Counts of chunks already written by an earlier run, read back from the store."""
    array = _array(path, name, token)
    parts = [(r[time_axis].start, _counts(array[r], time_axis)) for r in regions]
    return [(start, counts) for start, counts in parts if counts is not None]


def _write_fraction(path: Path, n_time: int, results: tuple[Any, ...]) -> None:
    totals = np.zeros((2, n_time), dtype=np.int64)
    for part in results:
        for start, counts in part:
            totals[:, start : start + counts.shape[1]] += counts
    valid, cloud = totals
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(valid > 0, cloud / np.maximum(valid, 1), np.nan).astype(np.float32)
    zarr.open_array(path, path=_FRACTION, mode="r+")[:] = fraction


# --- scheduling --------------------------------------------------------------------------


def _client(scheduler: Any) -> Any:
    """The distributed Client that will run the graph, if any."""
    if "distributed" not in sys.modules:
        return None
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler
    if scheduler is None:
        get = dask.base.get_scheduler()
        owner = getattr(get, "__self__", None)
        if isinstance(owner, Client):
            return owner
    return None


def _annotated(data: da.Array) -> bool:
    """Whether any layer of the graph carries ``dask.annotate`` annotations."""
    layers = getattr(data.__dask_graph__(), "layers", {})
    return any(getattr(layer, "annotations", None) for layer in layers.values())


def _compute(tasks: list[Any], scheduler: Any, progress: bool, path: Path,
             optimize: bool = True) -> tuple[Any, ...]:
    if not tasks:
        return ()
    client = _client(scheduler)
    if client is not None:
        if progress:
            print(f"xsensei: writing {path} on {client}; progress: {client.dashboard_link}")
        if not optimize:  # an annotated graph: client.compute keeps the restrictions
            return tuple(client.gather(client.compute(tasks, optimize_graph=False)))
        return dask.compute(*tasks, scheduler=client)
    bar: Any = contextlib.nullcontext()
    if progress:
        from tqdm.dask import TqdmCallback

        bar = TqdmCallback(desc=f"xsensei -> {path.name}")
    with bar:
        return dask.compute(*tasks, scheduler=scheduler, optimize_graph=optimize)
