"""``xsensei.cloudmask``: the one function behind the accessor, for xarray and numpy alike."""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xsensei._warnings import warn_user
from xsensei.descriptors import encode_wavelengths
from xsensei.engine import runtime
from xsensei.engine.dask import BlockTask, Output, predict_dask, predict_numpy
from xsensei.engine.output import spatial_dims
from xsensei.engine.predict import Partial
from xsensei.engine.tiling import Blend, WindowSpec
from xsensei.errors import InputError
from xsensei.nn.model import CLASS_FLAG_VALUES, CLOUD_CLASSES, CloudMaskModel

DEFAULT_MODEL = "default"
#: SEnSeI models are trained on 3 or more bands; fewer gives unreliable masks.
MIN_BANDS = 3
#: Spatial chunk used when an in-memory (numpy-backed) DataArray is masked lazily.
NUMPY_CHUNK = 2048
#: Reflective values above this (robust max) mean the input is not 0-1 reflectance.
MAX_REFLECTANCE = 5.0
#: Above this normalised brightness temperature (~730 K) a thermal band holds DN, not BT.
MAX_NORMALISED_BT = 5.0

ModelArg = str | os.PathLike[str] | CloudMaskModel


@dataclass(frozen=True)
class LoadedModel:
    """A model reference for tasks plus what the client needs to know about the model."""

    ref: runtime.ModelRef
    classes: tuple[str, ...]
    inference: dict[str, Any]
    segmenter: str | None


def resolve_model(model: ModelArg) -> LoadedModel:
    """Load (once per process) a packaged name / checkpoint path, or wrap a model object."""
    if isinstance(model, CloudMaskModel):
        ref = runtime.register_memory_model(model)
        meta = getattr(model, "checkpoint_metadata", None) or {}
        inference = dict(meta.get("inference", {}))
        return LoadedModel(ref, model.classes, inference, model.segmenter_name)
    from xsensei.weights.checkpoint import read_metadata, resolve_model_path

    path = resolve_model_path(model).resolve()
    meta = read_metadata(path)
    ref = runtime.ModelRef(str(path), meta["sha256"], meta["name"], str(meta["version"]))
    arch = meta["architecture"]
    return LoadedModel(ref, tuple(arch["classes"]), dict(meta.get("inference", {})),
                       arch["segmenter"]["name"])


def model_bands(wavelengths_nm: ArrayLike, loaded: LoadedModel,
                thermal: ArrayLike | None = None) -> NDArray[np.bool_]:
    """Which bands the model reads: all of them, unless its checkpoint says
    ``"thermal_bands": "ignore"`` (thermal bands make that model worse; see the model card),
    when thermal bands are left out as long as ``MIN_BANDS`` reflective bands remain.
    ``thermal`` (bool per band) defaults to a centre above ``THERMAL_CENTRE_NM``."""
    from xsensei.band_metadata import THERMAL_CENTRE_NM
    from xsensei.weights.checkpoint import thermal_policy

    wl = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1, 3)
    keep = np.ones(len(wl), dtype=bool)
    if thermal_policy(loaded.inference) == "ignore":
        is_thermal = (wl[:, 1] > THERMAL_CENTRE_NM if thermal is None
                      else np.asarray(thermal, dtype=bool))
        if (~is_thermal).sum() >= MIN_BANDS:
            keep = ~is_thermal
    return keep


def window_spec(
    loaded: LoadedModel, window: int | None, overlap: int | None, blend: Blend
) -> WindowSpec:
    """Window geometry: per-pixel models need none; others default to the checkpoint's hint."""
    if loaded.segmenter == "pixelnet" and window is None:
        return WindowSpec(size=None, blend=blend)
    size = window if window is not None else int(loaded.inference.get("window", 256))
    ov = overlap if overlap is not None else int(loaded.inference.get("overlap", size // 4))
    return WindowSpec(size=size, overlap=ov, blend=blend)


@dataclass(frozen=True)
class Preparer:
    """Raw block -> float32 model units, NaN where missing. Runs inside every task."""

    nodata: float | tuple[float, ...] | None = None  # a tuple: one per band (NaN: none)
    scale: Any = None  # radiometry.ScaleSpec | None
    resolved: Any = None  # band_metadata.ResolvedBands | None
    dn_hint: str | None = None  # the unapplied metadata scale, named if values look like DN

    def __post_init__(self) -> None:
        nodata = self.nodata
        values = nodata if isinstance(nodata, tuple) else (nodata,)
        if nodata is not None and any(isinstance(v, bool)
                                      or not isinstance(v, int | float | np.number)
                                      for v in values):
            raise InputError(
                f"nodata must be a number (the input's fill value, e.g. 0 or -9999) or None, "
                f"got {nodata!r}"
            )

    def __call__(self, block: NDArray[Any]) -> NDArray[np.float32]:
        values = block.astype(np.float32, copy=True)
        if isinstance(self.nodata, tuple):
            per_band = np.asarray(self.nodata, dtype=np.float64).reshape(-1, 1, 1)
            values[block == per_band] = np.nan
        elif self.nodata is not None and np.isfinite(self.nodata):
            values[block == self.nodata] = np.nan
        values[~np.isfinite(values)] = np.nan
        # Exactly 0 in every reflective band is a fill border (Landsat, Sentinel-2), not ground.
        refl = slice(None) if self.resolved is None else ~np.asarray(self.resolved.is_thermal)
        values[:, (block[refl] == 0).all(axis=0)] = np.nan
        if self.resolved is not None:
            from xsensei.radiometry import to_model_units

            values = to_model_units(values, self.resolved, self.scale)
        elif self.scale is not None:  # numpy input: DN * scale + offset, nodata found on DN
            from xsensei.radiometry import apply_scale

            apply_scale(values, self.scale)
        # A pixel with no reflective value (fill in every reflective band) is nodata, even
        # where a thermal band still has a value.
        values[:, ~np.isfinite(values[refl]).any(axis=0)] = np.nan
        check_model_units(block, values, self.resolved, self.scale, self.dn_hint)
        return values


def check_model_units(raw: NDArray[Any], values: NDArray[np.float32], resolved: Any = None,
                      scale: Any = None, dn_hint: str | None = None) -> None:
    """The checks of a block turned into model units (``values``) from ``raw``: not DN or
    percent (:func:`check_block_scale`), not a scale applied twice."""
    check_block_scale(values, resolved, dn_hint)
    if scale is not None and not scale.is_identity:
        refl = slice(None) if resolved is None else ~np.asarray(resolved.is_thermal, dtype=bool)
        check_not_scaled_twice(raw[refl], values[refl], scale)


def _high(values: NDArray[Any]) -> float | None:
    """99.5th percentile of the finite values (the max of a few), on a 1-in-16 sample of a
    large block: the same verdict, ~10x less work. None when nothing is finite."""
    if values.shape[-1] * values.shape[-2] >= 1 << 16:
        values = values[..., ::4, ::4]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    return float(np.percentile(finite, 99.5)) if finite.size > 64 else float(finite.max())


def check_block_scale(values: NDArray[np.float32], resolved: Any = None,
                      dn_hint: str | None = None) -> None:
    """Refuse blocks that are clearly not model units (reflectance as DN or percent, thermal
    bands as DN), with a hint."""
    if resolved is not None:
        thermal = np.asarray(resolved.is_thermal, dtype=bool)
        for i in np.flatnonzero(thermal):
            high = _high(values[i])
            if high is not None and high > MAX_NORMALISED_BT:
                from xsensei.radiometry import DEFAULT_BT_RANGE_K

                lo, hi = DEFAULT_BT_RANGE_K
                kelvin = lo + high * (hi - lo)
                raise InputError(
                    f"thermal band {resolved.names[i]!r} looks like digital numbers (read as "
                    f"~{kelvin:,.0f} K; brightness temperature is 180-340 K): a scalar scale= "
                    "leaves thermal bands as they are, so pass per-band scale= and offset= "
                    "(e.g. Landsat C2 L2 ST_B10: 0.00341802 and 149.0), or leave the band out"
                )
        values = values[~thermal]
    high = _high(values)
    if high is None:
        return
    if MAX_REFLECTANCE < high <= 100.5:
        raise InputError(
            f"values look like reflectance in percent (99.5th percentile {high:.4g}); pass "
            "scale=0.01 or divide by 100 first (8-bit digital numbers look the same: then pass "
            "their scale= and offset=)"
        )
    if high > MAX_REFLECTANCE:
        if dn_hint is not None:
            raise InputError(
                f"values look like digital numbers, not 0-1 reflectance (99.5th percentile "
                f"{high:.4g}), and their scale metadata was not applied (float data are taken "
                f"as decoded): pass {dn_hint}, or decode first (stackstac rescale=True, "
                "rioxarray mask_and_scale=True)"
            )
        raise InputError(
            f"values look like digital numbers or percent, not 0-1 reflectance (99.5th "
            f"percentile {high:.4g}); pass scale= and offset= (e.g. scale=0.0001 for "
            "Sentinel-2 L1C/L2A, scale=2.75e-05, offset=-0.2 for Landsat C2 L2) or convert first"
        )


def check_not_scaled_twice(raw: NDArray[Any], scaled: NDArray[np.float32], scale: Any) -> None:
    """Refuse a scale applied to float data that are 0-1 reflectance already (stackstac
    ``rescale=True``, rioxarray ``mask_and_scale=True``): the result would be ~0 or negative
    everywhere, a silently all-clear mask. ``raw`` / ``scaled``: the reflective bands."""
    if np.issubdtype(raw.dtype, np.integer):
        return
    raw_high, high = _high(np.abs(raw)), _high(scaled)
    if raw_high is None or high is None or raw_high > 1.5:
        return
    finite = scaled[np.isfinite(scaled)]
    if high < 0.002 or float(np.median(finite)) < -0.05:
        raise InputError(
            f"the input looks like 0-1 reflectance already (99.5th percentile {raw_high:.3g}), "
            f"and the scale ({scale.source}) turns it into {high:.2g} at most (99.5th "
            "percentile): it would be applied twice. Pass scale=1 (or drop the scale "
            "metadata) for decoded reflectance"
        )


def _task(
    loaded: LoadedModel,
    wavelengths_nm: ArrayLike,
    output: Output,
    prepare: Preparer,
    spec: WindowSpec,
    **options: Any,
) -> BlockTask:
    if output not in ("mask", "probability", "binary"):
        raise InputError(f"output must be 'mask', 'probability' or 'binary', got {output!r}")
    enc = encode_wavelengths(np.asarray(wavelengths_nm, dtype=np.float64))
    if enc.shape[0] < MIN_BANDS:
        raise InputError(
            f"{enc.shape[0]} usable band(s); SEnSeI models need at least {MIN_BANDS} (e.g. "
            "red, green, blue). Add bands, or check which were dropped for lacking wavelengths"
        )
    return BlockTask(
        model=loaded.ref,
        descriptors=enc,
        class_values=tuple(CLASS_FLAG_VALUES[c] for c in loaded.classes),
        cloud_classes=tuple(c in CLOUD_CLASSES for c in loaded.classes),
        spec=spec,
        output=output,
        prepare=prepare,
        **options,
    )


def cloudmask_numpy(
    values: NDArray[Any],
    descriptors: ArrayLike,
    *,
    model: ModelArg = DEFAULT_MODEL,
    output: Output = "mask",
    nodata: float | None = None,
    scale: Any = None,
    offset: Any = None,
    window: int | None = None,
    overlap: int | None = None,
    blend: Blend = "cosine",
    **options: Any,
) -> NDArray[Any]:
    """Mask a numpy ``(band, y, x)`` reflectance array; ``descriptors`` (N, 3) nm or um. Digital
    numbers need ``scale``/``offset``, read as for DataArrays
    (:func:`~xsensei.radiometry.explicit_scale`; no band names, so no mapping); ``nodata`` is in
    the input's units."""
    values = np.asarray(values)
    if values.ndim != 3:
        raise InputError(f"expected a (band, y, x) array, got shape {values.shape}")
    desc = np.asarray(descriptors, dtype=np.float64)
    if desc.shape != (values.shape[0], 3):
        raise InputError(
            f"descriptors must be (N, 3) [min, centre, max] nm with N = {values.shape[0]} "
            f"bands, got shape {desc.shape}"
        )
    from xsensei.band_metadata import descriptors_to_nm

    desc = descriptors_to_nm(desc)
    loaded = resolve_model(model)
    keep = model_bands(desc, loaded)
    scale_spec = None
    if scale is not None or offset is not None:
        from xsensei.band_metadata import THERMAL_CENTRE_NM
        from xsensei.radiometry import explicit_scale

        scale_spec = explicit_scale(scale, offset, desc[keep, 1] > THERMAL_CENTRE_NM,
                                    n_in=len(desc), indices=np.flatnonzero(keep).tolist())
    if not keep.all():
        values, desc = values[keep], desc[keep]
    spec = window_spec(loaded, window, overlap, blend)
    task = _task(loaded, desc, output, Preparer(nodata=nodata, scale=scale_spec), spec, **options)
    return predict_numpy(values, task)


def _as_band_array(data: xr.DataArray | xr.Dataset, resolved: Any, band_dim: str) -> xr.DataArray:
    """The kept bands as one DataArray with a ``band`` dim (a Dataset's variables stacked)."""
    if isinstance(data, xr.Dataset):
        from xsensei.band_metadata import band_variables, stack_band_variables

        names = band_variables(data)
        return stack_band_variables(data, [names[i] for i in resolved.indices], resolved.names)
    dim = resolved.band_dim or band_dim
    return data.isel({dim: list(resolved.indices)}).rename({dim: "band"})


def _native_resolution(arr: xr.DataArray, ydim: str, xdim: str) -> float | None:
    """The grid's pixel size in metres for ``resolution=``; refuses degrees and pixels that
    are not square (one factor serves both axes), which would coarsen by the wrong amount."""
    try:
        xres, yres = (abs(float(r)) for r in arr.rio.resolution())
    except Exception:
        if xdim in arr.coords and arr.sizes[xdim] > 1:
            return abs(float(arr[xdim][1] - arr[xdim][0]))
        return None  # no coords: positions are not a pixel size
    if not (np.isfinite(xres) and xres > 0):
        return None
    crs = arr.rio.crs
    if crs is not None and crs.is_geographic:
        raise InputError(
            f"resolution= is a pixel size in metres, but the grid's CRS ({crs}) is in degrees "
            f"(pixels of {xres:.3g} deg): reproject to a projected CRS first (e.g. "
            "rio.reproject, or odc-stac / stackstac with a UTM epsg=), or leave resolution= out"
        )
    if np.isfinite(yres) and yres > 0 and abs(xres - yres) > 0.01 * max(xres, yres):
        raise InputError(
            f"resolution= needs square pixels, but they are {xres:g} x {yres:g} (x by y): "
            "resample to square pixels first, or leave resolution= out"
        )
    return xres


def coarsening_factor(resolution: float, native: float) -> int:
    """Whole-pixel block size for ``resolution=`` (xsensei coarsens; it never upsamples).

    Warns when the model will not run at the requested pixel size: a request finer than the
    grid, or more than 10 % away from a whole multiple of it.
    """
    requested = resolution
    try:
        resolution = float(resolution)
    except (TypeError, ValueError):
        resolution = float("nan")
    if not (np.isfinite(resolution) and resolution > 0):
        raise InputError(f"resolution= must be a positive pixel size in metres, got "
                         f"{requested!r}")
    factor = max(1, round(resolution / native))
    effective = factor * native
    if abs(effective - resolution) > 0.1 * resolution:
        why = ("is finer than the data's grid (xsensei does not upsample)" if resolution < native
               else "is not a whole multiple of the data's pixel size")
        warn_user(f"resolution={resolution:g} m {why}: the model runs at {effective:g} m "
                  f"(blocks of {factor} x {factor} pixels of {native:g} m); pass "
                  f"resolution={effective:g} to ask for that")
    return factor


def _coarsen(values: da.Array, factor: int) -> da.Array:
    """Block-mean by ``factor`` on y/x anchored at the scene origin (NaN-aware, NaN padding)."""
    _, _, ny, nx = values.shape
    py, px = -ny % factor, -nx % factor
    values = values.astype(np.float32)
    if py or px:
        values = da.pad(values, ((0, 0), (0, 0), (0, py), (0, px)), constant_values=np.nan)
    chunk = max(factor, (max(values.chunks[2] + values.chunks[3]) // factor) * factor)
    values = values.rechunk({2: chunk, 3: chunk})

    def nanmean(x: NDArray[Any], axis: Any = None) -> NDArray[Any]:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(x, axis=axis)

    return da.coarsen(nanmean, values, {2: factor, 3: factor}, trim_excess=False)


def _refine(
    out: da.Array, factor: int, shape: tuple[int, int], chunks: tuple[Any, Any]
) -> da.Array:
    """Nearest-neighbour back to the native grid, cropped and rechunked like the input."""
    out = da.repeat(da.repeat(out, factor, axis=-2), factor, axis=-1)
    out = out[..., : shape[0], : shape[1]]
    return out.rechunk({out.ndim - 2: chunks[0], out.ndim - 1: chunks[1]})


def cloudmask(
    data: xr.DataArray | xr.Dataset | NDArray[Any],
    descriptors: Any = None,
    *,
    sensor: str | None = None,
    model: ModelArg = DEFAULT_MODEL,
    output: Output = "mask",
    scale: Any = None,
    offset: Any = None,
    nodata: float | None = None,
    band_dim: str = "band",
    resolution: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 4,
    window: int | None = None,
    overlap: int | None = None,
    blend: Blend = "cosine",
    partial: Partial = "fill",
    torch_threads: int | None = None,
) -> xr.DataArray | NDArray[Any]:
    """Cloud mask of an image: lazy and on the input grid for xarray, eager for numpy.

    ``data`` is ``(band, y, x)`` or ``(time, band, y, x)`` TOA reflectance (a DataArray), a
    Dataset of one variable per band, or a numpy ``(band, y, x)`` array with ``descriptors``.
    Band wavelengths come from ``descriptors``, then coords / attrs, then band names plus
    ``sensor`` in the catalogue. Integer DN need ``scale``/``offset`` (or STAC raster metadata).
    ``output``: ``mask`` (uint8 0 clear, 1 thick, 2 thin, 3 shadow, 255 nodata), ``binary``
    (0/1/255) or ``probability`` (float32 per class). ``resolution`` (m) runs the model on a
    coarser grid (the paper's models work best at 20-30 m) and returns the native grid.
    """
    options = {
        "device": device,
        "precision": precision,
        "batch_size": batch_size,
        "partial": partial,
        "torch_threads": torch_threads,
    }
    if isinstance(data, np.ndarray):
        unused = {name: value for name, value in (("sensor", sensor), ("resolution", resolution))
                  if value is not None}
        if band_dim != "band":
            unused["band_dim"] = band_dim
        if unused:
            names = " and ".join(f"{k}=" for k in unused)
            raise InputError(
                f"{names} {'needs' if len(unused) == 1 else 'need'} xarray input (band names, "
                "a grid), which a numpy array lacks: wrap it in a DataArray with x/y coords "
                f"and a CRS, or leave {names} out"
            )
        if descriptors is None:
            raise InputError(
                "a numpy array carries no wavelengths: pass descriptors= as an (N, 3) array of "
                "[min, centre, max] nm per band, or wrap it in a DataArray with band names and "
                "pass sensor="
            )
        return cloudmask_numpy(data, descriptors, model=model, output=output, nodata=nodata,
                               scale=scale, offset=offset, window=window, overlap=overlap,
                               blend=blend, **options)
    if not isinstance(data, xr.DataArray | xr.Dataset):
        raise InputError(f"expected an xarray DataArray/Dataset or numpy array, got {type(data)}")

    from xsensei.band_metadata import resolve_bands
    from xsensei.engine.output import wrap_output
    from xsensei.radiometry import metadata_scale_hint, scale_from_metadata

    ydim, xdim = spatial_dims(data)
    resolved = resolve_bands(data, band_dim=band_dim, descriptors=descriptors, sensor=sensor)
    loaded = resolve_model(model)
    keep = model_bands(resolved.wavelengths_nm, loaded, resolved.is_thermal)
    if not keep.all():
        resolved = resolved.subset(np.flatnonzero(keep))
    arr = _as_band_array(data, resolved, band_dim)
    extra = [d for d in arr.dims if d not in ("band", ydim, xdim)]
    if len(extra) > 1:
        raise InputError(
            f"dims {tuple(arr.dims)}: expected (band, y, x) or (time, band, y, x); select or "
            f"stack the extra dims {extra} first"
        )
    arr = arr.transpose(*extra, "band", ydim, xdim)
    scale_spec = scale_from_metadata(data, resolved, scale=scale, offset=offset)
    if scale_spec is None and np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"integer data ({arr.dtype}) without a scale: these look like digital numbers. "
            "Pass scale= and offset= (e.g. scale=0.0001 for Sentinel-2 L1C, scale=2.75e-05, "
            "offset=-0.2 for Landsat C2 L2), or convert to 0-1 reflectance first"
        )
    if nodata is None:
        nodata = _input_nodata(data, arr, resolved)

    values = arr.data
    if not isinstance(values, da.Array):
        # Results do not depend on chunking, so bound task memory for big in-memory scenes.
        values = da.from_array(values, chunks=(1,) * len(extra) + (-1, NUMPY_CHUNK, NUMPY_CHUNK))
    if not extra:
        values = values[None]

    spec = window_spec(loaded, window, overlap, blend)
    hint = metadata_scale_hint(data, resolved) if scale_spec is None else None
    prepare = Preparer(nodata=nodata, scale=scale_spec, resolved=resolved, dn_hint=hint)
    task = _task(loaded, resolved.wavelengths_nm, output, prepare, spec, **options)

    factor = 1
    if resolution is not None:
        native = _native_resolution(arr, ydim, xdim)
        if native is None:
            raise InputError("resolution= needs a grid with a known pixel size: x/y coords or "
                             "a CRS transform")
        factor = coarsening_factor(resolution, native)
    if factor > 1:
        prepared = prepare_lazily(values, prepare)
        task = _task(loaded, resolved.wavelengths_nm, output, Preparer(), spec, **options)
        coarse = predict_dask(_coarsen(prepared, factor), task)
        out = _refine(coarse, factor, arr.shape[-2:], values.chunks[-2:])
        invalid = ~_valid_lazy(prepared, partial).rechunk(out.chunks[:1] + out.chunks[-2:])
        if output == "probability":
            out = da.where(invalid[:, None], np.float32(np.nan), out)
        else:
            out = da.where(invalid, np.uint8(255), out)
    else:
        out = predict_dask(values, task)
    if not extra:
        out = out[0]
    template = arr.isel(band=0, drop=True)
    result = wrap_output(out, template, kind=output, classes=loaded.classes,
                         model_name=loaded.ref.name, model_version=loaded.ref.version)
    result.attrs["input_bands"] = " ".join(str(n) for n in resolved.names)  # what the model read
    result.attrs["inference"] = _inference_summary(spec, factor, precision, partial)
    result.attrs["input_scaling"] = _scaling_summary(scale_spec, nodata)
    result.attrs["input_wavelengths_nm"] = " ".join(
        "-".join(f"{v:.1f}" for v in row) for row in np.asarray(resolved.wavelengths_nm))
    return result


def _inference_summary(spec: WindowSpec, factor: int, precision: str, partial: str) -> str:
    """The settings that change a mask beyond the model and its input bands, as one readable
    attribute: ``to_zarr(resume=True)`` refuses to finish a store written with others."""
    windows = ("per pixel" if spec.size is None
               else f"window {spec.size} overlap {spec.overlap} blend {spec.blend}")
    grid = "native grid" if factor == 1 else f"model grid {factor}x coarser"
    return f"{windows}; {grid}; precision {precision}; partial {partial}"


def _scaling_summary(scale_spec: Any, nodata: float | tuple[float, ...] | None) -> str:
    """How raw values became model units, as one readable attribute (also checked on
    resume): a corrected scale, offset or nodata makes another mask."""
    if scale_spec is None or scale_spec.is_identity:
        scaling = "none (the values as given)"
    else:
        def one(values: NDArray[np.float64]) -> str:
            return f"{values[0]:g}" if (values == values[0]).all() else \
                "[" + " ".join(f"{v:g}" for v in values) + "]"

        scaling = f"scale {one(scale_spec.scale)} offset {one(scale_spec.offset)}"
        if scale_spec.thermal_units is not None and any(scale_spec.thermal_units):
            scaling += " thermal " + " ".join(str(u) for u in scale_spec.thermal_units)
        scaling += f" ({scale_spec.source})"
    if isinstance(nodata, tuple):
        shown = "[" + " ".join("none" if np.isnan(v) else f"{v:g}" for v in nodata) + "]"
    else:
        shown = "none" if nodata is None else f"{nodata:g}"
    return f"{scaling}; nodata {shown}"


def prepare_lazily(values: da.Array, prepare: Preparer) -> da.Array:
    """Apply the per-band scaling blockwise (band axis in one chunk) before coarsening."""
    values = values.rechunk({1: -1})

    def apply(block: NDArray[Any]) -> NDArray[np.float32]:
        return np.stack([prepare(b) for b in block])

    return values.map_blocks(apply, dtype=np.float32, meta=np.empty((0,) * 4, np.float32))


def _valid_lazy(prepared: da.Array, partial: Partial) -> da.Array:
    """Per-pixel validity ``(T, Y, X)`` of prepared values, as the engine defines it."""
    finite = da.isfinite(prepared)
    return finite.any(axis=1) if partial == "fill" else finite.all(axis=1)


def nodata_of(arr: xr.DataArray) -> float | None:
    """The nodata value rioxarray knows (attrs or encoding), if any. Integer data written
    with ``encoded=True`` still hold the encoded value, which is then the one to look for."""
    value = None
    with contextlib.suppress(Exception):  # rioxarray raises for NaN nodata on integers
        value = arr.rio.nodata
    if value is None or (np.isnan(value) and np.issubdtype(arr.dtype, np.integer)):
        with contextlib.suppress(Exception):
            encoded = arr.rio.encoded_nodata
            value = value if encoded is None else encoded
    if value is None:
        value = arr.attrs.get("nodata", arr.attrs.get("_FillValue"))
    return None if value is None else float(value)


def _input_nodata(data: xr.DataArray | xr.Dataset, arr: xr.DataArray,
                  resolved: Any) -> float | tuple[float, ...] | None:
    """The input's nodata: one value, or one per band for a Dataset whose variables differ
    (odc-stac keeps each asset's own)."""
    if not isinstance(data, xr.Dataset):
        return nodata_of(arr)
    from xsensei.band_metadata import band_variables

    names = band_variables(data)
    values = [nodata_of(data[names[i]]) for i in resolved.indices]
    if len(set(values)) <= 1:
        return values[0] if values else None
    return tuple(np.nan if v is None else v for v in values)
