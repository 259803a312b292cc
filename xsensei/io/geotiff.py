"""Write masks as Cloud-Optimized GeoTIFFs, the format GIS tools and peers' users expect."""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xsensei.engine.output import corner_grid, spatial_dims
from xsensei.errors import InputError

__all__ = ["to_cog"]


def _band_label(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s"))
    return str(value)


def _tag(value: Any) -> str:
    """GDAL metadata is text; CF arrays are space separated, as in ``flag_meanings``."""
    if isinstance(value, np.ndarray | list | tuple):
        return " ".join(str(v.item() if isinstance(v, np.generic) else v) for v in value)
    return str(value)


def to_cog(mask: xr.DataArray, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``mask`` to a Cloud-Optimized GeoTIFF and return its path.

    A ``(y, x)`` mask gives one band. A ``(time, y, x)`` mask (or ``(class, y, x)``
    probabilities) gives one band per step of the leading dim, each band described by its time
    (ISO 8601) or class name, so a time series stays a single file as GDAL tools expect; select
    a time first (``mask.isel(time=0)``) for one file per date. 4-D input is refused.

    uint8 masks keep nodata 255 and get ``MODE`` overviews (averaging would invent classes);
    float probabilities keep NaN nodata and get ``AVERAGE`` overviews. CRS, transform and the
    CF flag attributes (as GDAL metadata) are written. The file is written next to ``path``
    and renamed into place, so a failed write never leaves a truncated COG; an existing file is
    only replaced with ``overwrite=True``. GDAL's COG driver writes whole files, so the mask is
    computed into memory: use :func:`xsensei.io.zarr.to_zarr` for larger-than-memory masks.
    """
    import rioxarray  # noqa: F401  (registers .rio)

    if not isinstance(mask, xr.DataArray):
        raise TypeError(f"mask must be an xarray.DataArray, got {type(mask).__name__}")
    path = Path(os.fspath(path)).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a GeoTIFF path")

    y_dim, x_dim = spatial_dims(mask)
    extra = [d for d in mask.dims if d not in (y_dim, x_dim)]
    if len(extra) > 1:
        raise InputError(
            f"a GeoTIFF holds (band, y, x); this mask has dims {tuple(mask.dims)}: select one "
            f"step of {extra[0]!r} first, e.g. mask.isel({extra[0]}=0)"
        )
    if mask.rio.crs is None:
        raise InputError(
            "the mask has no CRS; a GeoTIFF without one is not georeferenced. "
            "Set it with mask.rio.write_crs(...)"
        )
    out = mask.transpose(*extra, y_dim, x_dim)
    corners = corner_grid(out, y_dim, x_dim)
    if corners is not None:
        # coords are pixel top-left corners (a stackstac xy_coords="topleft" stack's mask):
        # GDAL takes pixel centres from rioxarray, so move them there for the file
        out = out.assign_coords({x_dim: out[x_dim] + corners.a / 2,
                                 y_dim: out[y_dim] + corners.e / 2})

    is_int = out.dtype.kind in "iub"
    nodata = out.rio.nodata
    if nodata is None:
        nodata = 255 if out.dtype == np.uint8 else (None if is_int else np.nan)
    attrs: dict[str, Any] = {k: _tag(v) for k, v in out.attrs.items()
                             if k not in ("_FillValue", "transform")}
    if extra:
        # rioxarray turns a tuple long_name into band descriptions; keep the title as a tag
        labels = [_band_label(v) for v in out[extra[0]].values]
        if "long_name" in attrs:
            attrs["title"] = attrs.pop("long_name")
        attrs["long_name"] = tuple(labels)
        attrs["band_tags"] = [{str(extra[0]): label} for label in labels]
    out = out.copy()
    out.attrs = attrs
    out.encoding = {}
    out = out.rio.write_nodata(nodata, encoded=False)
    # rioxarray keeps set_spatial_dims on the object only (transpose/copy drop it), and finds
    # only y/x and latitude/longitude itself: set lat/lon & co. on the object that is written
    out = out.rio.set_spatial_dims(x_dim=x_dim, y_dim=y_dim)

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.tif")
    try:
        with warnings.catch_warnings():
            # rioxarray still builds transforms with Affine's deprecated ``*`` operator
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
            out.rio.to_raster(
                tmp,
                driver="COG",
                compress="DEFLATE",
                RESAMPLING="MODE" if is_int else "AVERAGE",
                BIGTIFF="IF_SAFER",
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.aux.xml").unlink(missing_ok=True)
    return path
