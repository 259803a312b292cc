"""Turn raw engine arrays into self-describing, georeferenced cloud-mask DataArrays.

The engine produces bare numpy/Dask arrays; this module gives them the template's grid
(``time``/``y``/``x`` coords, CRS, transform), CF flag attributes and an explicit nodata so that
``rioxarray``, the zarr and COG writers and plain xarray users all read the same meaning out of
the same bytes. Input attributes (stackstac's ``spec``, scale factors) are never inherited: a
mask is not reflectance.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from xsensei.errors import InputError

__all__ = [
    "CLASS_VALUES",
    "CLOUD_VALUES",
    "DEFAULT_NAMES",
    "NODATA",
    "mask_attrs",
    "spatial_dims",
    "wrap_output",
]

#: Value of pixels without a valid prediction in uint8 masks (mask and binary outputs).
NODATA: int = 255

#: Class name -> stored value in a categorical mask. ``cloud`` (2- and 3-class models) shares
#: the value of ``thick_cloud`` so every model's "opaque cloud" reads the same.
CLASS_VALUES: Mapping[str, int] = {
    "clear": 0,
    "thick_cloud": 1,
    "cloud": 1,
    "thin_cloud": 2,
    "cloud_shadow": 3,
}

#: Stored values that count as cloud (for cloud fractions and binary masks).
CLOUD_VALUES: tuple[int, ...] = (1, 2)

#: Default variable name per output kind.
DEFAULT_NAMES: Mapping[str, str] = {
    "mask": "cloud_mask",
    "probability": "cloud_probability",
    "binary": "cloud_binary",
}

_LONG_NAMES = {
    "mask": "cloud mask",
    "probability": "cloud class probability",
    "binary": "binary cloud mask",
}

#: Coordinates describing bands or spectra (stackstac, ENVI, rioxarray): meaningless on a mask.
_SPECTRAL_COORDS = frozenset(
    {
        "band",
        "bands",
        "common_name",
        "center_wavelength",
        "full_width_half_max",
        "wavelength",
        "wavelengths",
        "fwhm",
        "gsd",
        "title",
        "description",
        "eo:bands",
        "raster:bands",
        "scale",
        "offset",
        "scale_factor",
        "add_offset",
    }
)

Kind = Literal["mask", "probability", "binary"]


def _xsensei_version() -> str:
    import xsensei

    return str(xsensei.__version__)


def _provenance(model_name: str, model_version: str) -> dict[str, str]:
    return {
        "model": str(model_name),
        "model_version": str(model_version),
        "xsensei_version": _xsensei_version(),
    }


def mask_attrs(classes: Sequence[str], model_name: str, model_version: str) -> dict[str, Any]:
    """CF flag attributes of a categorical mask predicted with ``classes``.

    ``flag_values``/``flag_meanings`` let any CF-aware tool (and :func:`xsensei.plot.summary`)
    decode the mask without knowing which model wrote it; nodata (255) is always listed.
    """
    if isinstance(classes, str):
        raise TypeError(f"classes must be a sequence of class names, got the string {classes!r}")
    if len(classes) == 0:
        raise InputError("classes is empty: a mask needs at least one class")
    by_value: dict[int, str] = {}
    for name in classes:
        if name not in CLASS_VALUES:
            known = ", ".join(sorted(CLASS_VALUES))
            raise InputError(f"unknown class {name!r}; known classes: {known}")
        value = CLASS_VALUES[name]
        if value in by_value:
            raise InputError(
                f"classes {by_value[value]!r} and {name!r} both map to mask value {value}; "
                "a model predicts at most one of them"
            )
        by_value[value] = name
    values = sorted(by_value)
    return {
        "long_name": _LONG_NAMES["mask"],
        "flag_values": np.array([*values, NODATA], dtype=np.uint8),
        "flag_meanings": " ".join([*(by_value[v] for v in values), "nodata"]),
        **_provenance(model_name, model_version),
    }


def _binary_attrs(model_name: str, model_version: str) -> dict[str, Any]:
    return {
        "long_name": _LONG_NAMES["binary"],
        "flag_values": np.array([0, 1, NODATA], dtype=np.uint8),
        "flag_meanings": "not_cloud cloud nodata",
        **_provenance(model_name, model_version),
    }


def _probability_attrs(model_name: str, model_version: str) -> dict[str, Any]:
    return {
        "long_name": _LONG_NAMES["probability"],
        "units": "1",
        "valid_range": np.array([0.0, 1.0], dtype=np.float32),
        **_provenance(model_name, model_version),
    }


#: (y, x) dim names recognised, in order of preference (same as the public API).
SPATIAL_DIM_NAMES = (("y", "x"), ("lat", "lon"), ("latitude", "longitude"))


def spatial_dims(obj: xr.DataArray | xr.Dataset) -> tuple[str, str]:
    """(y_dim, x_dim) of ``obj``: y/x, lat/lon, latitude/longitude, else what rioxarray finds."""
    for y, x in SPATIAL_DIM_NAMES:
        if y in obj.dims and x in obj.dims:
            return y, x
    import rioxarray  # noqa: F401  (registers .rio)

    try:
        return str(obj.rio.y_dim), str(obj.rio.x_dim)
    except Exception as err:  # rioxarray raises MissingSpatialDimensionError
        raise InputError(
            f"no spatial dims found: dims are {tuple(obj.dims)}; expected ('y', 'x') (or "
            "lat/lon). Rename them, e.g. da.rename({'rows': 'y', 'cols': 'x'}), or set them "
            "with obj.rio.set_spatial_dims(...)"
        ) from err


def _kept_coords(
    template: xr.DataArray | xr.Dataset, allowed_dims: set[str]
) -> dict[str, xr.Variable]:
    """Template coords that still describe the mask: 0-d or along time/y/x, never spectral."""
    kept = {}
    for name, coord in template.coords.items():
        if name in _SPECTRAL_COORDS or name == "spatial_ref":
            continue
        if set(coord.dims) <= allowed_dims:
            kept[str(name)] = coord.variable
    return kept


def wrap_output(
    data: Any,
    template: xr.DataArray | xr.Dataset,
    *,
    kind: Kind,
    classes: Sequence[str],
    model_name: str,
    model_version: str,
    name: str | None = None,
) -> xr.DataArray:
    """Wrap an engine array as a georeferenced mask DataArray on ``template``'s grid.

    ``data`` (numpy or Dask, kept lazy) has the template's ``y, x`` (or lat/lon) as its last two
    dims, preceded by the template's other non-band dims (usually ``time``; any name is kept)
    and, for ``kind="probability"``, a ``class`` dim right before ``y``. The CRS and transform
    are copied, nodata is explicit (255 for uint8 masks as a ``_FillValue`` attribute so
    ``.rio.nodata`` finds it, NaN for probabilities) and attributes are set from scratch.
    A template whose coords are the top-left corners of its ``attrs["transform"]`` grid
    (stackstac's default ``xy_coords="topleft"``) gives a mask with the same coords (it aligns
    with the stack) and that ``attrs["transform"]``, which :func:`xsensei.to_cog` writes on;
    rioxarray, which reads coords as pixel centres, sees both half a pixel off.

    Note: plain ``xr.Dataset.to_zarr``/``to_netcdf`` turn a uint8 variable with a
    ``_FillValue`` into float on reading; :func:`xsensei.io.zarr.to_zarr` stores nodata as the
    zarr fill value instead, so the mask reopens as uint8.
    """
    import rioxarray  # noqa: F401  (registers .rio)

    if kind not in DEFAULT_NAMES:
        raise InputError(f"kind must be one of {sorted(DEFAULT_NAMES)}, got {kind!r}")
    if isinstance(data, xr.DataArray):
        data = data.data
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)

    y_dim, x_dim = spatial_dims(template)
    leading = [str(d) for d in template.dims if d not in (y_dim, x_dim, *_SPECTRAL_COORDS)]
    dims: list[str] = list(leading)
    if kind == "probability":
        dims.append("class")
    dims += [y_dim, x_dim]

    sizes = dict(template.sizes)
    expected = tuple(len(classes) if d == "class" else sizes[d] for d in dims)
    if tuple(data.shape) != expected:
        layout = ", ".join(f"{d}={n}" for d, n in zip(dims, expected, strict=True))
        raise InputError(
            f"{kind} data has shape {tuple(data.shape)} but the template grid needs ({layout})"
        )

    if kind == "probability":
        if data.dtype.kind != "f":
            raise InputError(f"probability data must be floating point, got {data.dtype}")
        if data.dtype != np.float32:
            data = data.astype(np.float32)
    else:
        if kind == "binary" and data.dtype == bool:
            data = data.astype(np.uint8)
        if data.dtype != np.uint8:
            raise InputError(
                f"{kind} data must be uint8 (0..3 classes, 255 nodata), got {data.dtype}; "
                "cast it after checking its values"
            )

    if kind == "mask":
        attrs = mask_attrs(classes, model_name, model_version)
    elif kind == "binary":
        attrs = _binary_attrs(model_name, model_version)
    else:
        attrs = _probability_attrs(model_name, model_version)

    coords = _kept_coords(template, {*leading, y_dim, x_dim})
    if kind == "probability":
        coords["class"] = xr.Variable("class", np.asarray(list(classes), dtype=str))

    out = xr.DataArray(data, dims=dims, coords=coords, name=name or DEFAULT_NAMES[kind])
    out.attrs = attrs
    out.encoding = {}

    corners = corner_grid(template, y_dim, x_dim)
    if (y_dim, x_dim) != ("y", "x"):
        template = template.rio.set_spatial_dims(x_dim=x_dim, y_dim=y_dim)
        out = out.rio.set_spatial_dims(x_dim=x_dim, y_dim=y_dim)
    crs = template.rio.crs
    if crs is not None:
        out = out.rio.write_crs(crs)
    transform = corners if corners is not None else _template_transform(template)
    if transform is not None:
        out = out.rio.write_transform(transform)
    if kind == "probability":
        out = out.rio.write_nodata(np.nan, encoded=False)
    else:
        out = out.rio.write_nodata(NODATA, encoded=False)
    if corners is not None:
        # coords name top-left corners (stackstac's default): keep them, so the mask aligns
        # with the stack, and record the true grid as stackstac does; to_cog writes on it
        out.attrs["transform"] = tuple(corners)[:6]
    return out


def _template_transform(template: xr.DataArray | xr.Dataset) -> Any:
    """The template's affine transform, or None when its grid has none (e.g. a single pixel)."""
    with warnings.catch_warnings():
        # rioxarray still builds transforms with Affine's deprecated ``*`` operator
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        try:
            return template.rio.transform()
        except Exception:
            return None


def corner_grid(template: xr.DataArray | xr.Dataset, y_dim: str, x_dim: str) -> Any:
    """The affine of the template's pixels when its coords are their top-left corners, else None.

    stackstac (``xy_coords="topleft"``, its default) labels pixels by their top-left corners
    and records the grid in ``attrs["transform"]``; rioxarray reads coords as pixel centres,
    which would shift the mask half a pixel. Only an axis-aligned ``attrs["transform"]`` (an
    Affine, or its 6 or 9 numbers) whose grid points are exactly the coords (``transform *
    (col, row)`` for consecutive integers, to 1e-3 pixel; a slice of the stack is fine) counts;
    coords that are its pixel centres, or anything else, give None: the coords decide as before.
    """
    from affine import Affine

    raw = template.attrs.get("transform")
    if raw is None or x_dim not in template.coords or y_dim not in template.coords:
        return None
    try:
        if not isinstance(raw, Affine):
            if len(raw) not in (6, 9):
                return None
            raw = Affine(*(float(v) for v in list(raw)[:6]))
        x = np.asarray(template[x_dim].values, dtype=float)
        y = np.asarray(template[y_dim].values, dtype=float)
    except (TypeError, ValueError, KeyError):
        return None
    a, b, c, d, e, f = (float(v) for v in raw[:6])
    if b != 0 or d != 0 or a == 0 or e == 0 or x.ndim != 1 or y.ndim != 1:
        return None
    if x.size == 0 or y.size == 0:
        return None
    cols, rows = (x - c) / a, (y - f) / e
    col0, row0 = float(np.round(cols[0])), float(np.round(rows[0]))
    tol = 1e-3
    if not (
        np.allclose(cols, col0 + np.arange(cols.size), rtol=0, atol=tol)
        and np.allclose(rows, row0 + np.arange(rows.size), rtol=0, atol=tol)
    ):
        return None
    return Affine(a, 0.0, c + a * col0, 0.0, e, f + e * row0)
