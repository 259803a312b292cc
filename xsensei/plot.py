"""Look at a mask: RGB quicklook with the mask overlaid, and a per-time cloud-cover table.

matplotlib is imported inside the functions so ``import xsensei`` stays light.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from xsensei.engine.output import spatial_dims
from xsensei.errors import InputError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["quicklook", "save_quicklook", "summary"]

#: Target wavelengths (nm) of the red, green and blue channels of the composite.
RGB_NM = (650.0, 560.0, 480.0)

#: Overlay colour per class name; None means not drawn (transparent).
CLASS_COLOURS: dict[str, str | None] = {
    "clear": None,
    "not_cloud": None,
    "nodata": None,
    "thick_cloud": "#00b4ff",
    "cloud": "#00b4ff",
    "thin_cloud": "#b3ecff",
    "cloud_shadow": "#3b0a57",
}

_DEFAULT_FLAGS = {0: "clear", 1: "thick_cloud", 2: "thin_cloud", 3: "cloud_shadow", 255: "nodata"}


def _flags(mask: xr.DataArray) -> dict[int, str]:
    """value -> class name, from the CF flag attributes (the default map without them)."""
    values = mask.attrs.get("flag_values")
    meanings = mask.attrs.get("flag_meanings")
    if values is None or meanings is None:
        return dict(_DEFAULT_FLAGS)
    names = str(meanings).split()
    values = np.atleast_1d(np.asarray(values)).tolist()
    if len(names) != len(values):
        raise InputError(f"mask flag_values {values} and flag_meanings {names} differ in length")
    return {int(v): n for v, n in zip(values, names, strict=True)}


def _nodata(mask: xr.DataArray) -> int:
    flags = _flags(mask)
    for value, name in flags.items():
        if name == "nodata":
            return value
    return 255


def _single_time(obj: xr.DataArray, what: str) -> xr.DataArray:
    if "time" in obj.dims:
        if obj.sizes["time"] != 1:
            raise InputError(
                f"{what} has {obj.sizes['time']} time steps; a quicklook shows one: "
                "select it first, e.g. .isel(time=0)"
            )
        obj = obj.isel(time=0)
    return obj


def _band_array(image: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """A Dataset of one variable per band (odc-stac style) stacked along ``band``, labelled
    by variable name, as :func:`xsensei.cloudmask` reads it; a DataArray as it is."""
    if not isinstance(image, xr.Dataset):
        return image
    from xsensei.band_metadata import band_variables, stack_band_variables

    names = band_variables(image)
    if not names:
        raise InputError(
            "the Dataset has no band variables (data variables with y/x dims); variables: "
            f"{list(map(str, image.data_vars))}"
        )
    return stack_band_variables(image, names)


def _band_dim(image: xr.DataArray, yx: tuple[str, str]) -> Hashable:
    extra = [d for d in image.dims if d not in yx]
    if len(extra) != 1:
        raise InputError(
            f"image must have dims (band, y, x) (one time step), got {tuple(image.dims)}"
        )
    return extra[0]


def _wavelengths_nm(image: xr.DataArray, band: Hashable) -> np.ndarray | None:
    """Band centres in nm from coords (stackstac's micrometres or ENVI's nanometres)."""
    for name in ("center_wavelength", "wavelength", "wavelengths"):
        if name in image.coords and image.coords[name].dims == (band,):
            try:
                values = np.asarray(image.coords[name].values, dtype=float)
            except (TypeError, ValueError):  # stackstac object coords holding None
                continue
            if np.isfinite(values).sum() >= 3:
                return np.where(values < 100.0, values * 1000.0, values)
    return None


def _rgb_indices(
    image: xr.DataArray,
    band: Hashable,
    rgb: Sequence[Any] | None,
    wavelengths_nm: Sequence[float] | None,
) -> list[int]:
    n = image.sizes[band]
    if rgb is not None:
        if len(rgb) != 3:
            raise InputError(f"rgb must name three bands, got {rgb!r}")
        if band not in image.coords:
            return [int(i) for i in rgb]
        labels = list(image.coords[band].values)
        missing = [b for b in rgb if b not in labels]
        if missing:
            raise InputError(f"rgb bands {missing} not in the image's bands {labels}")
        return [labels.index(b) for b in rgb]
    if n < 3:
        raise InputError(f"an RGB quicklook needs three bands, the image has {n}")
    if wavelengths_nm is not None:
        nm = np.asarray(wavelengths_nm, dtype=float)
        if nm.shape != (n,):
            raise InputError(f"wavelengths_nm has {nm.size} values for {n} bands")
    else:
        nm = _wavelengths_nm(image, band)
    if nm is not None:
        return [int(np.nanargmin(np.abs(nm - target))) for target in RGB_NM]
    for source in ("common_name", band):
        if source in image.coords and image.coords[source].dims == (band,):
            names = [str(v).lower() for v in image.coords[source].values]
            if all(c in names for c in ("red", "green", "blue")):
                return [names.index(c) for c in ("red", "green", "blue")]
    return [0, 1, 2]


def _stretch(rgb: np.ndarray, percentiles: tuple[float, float], use: np.ndarray) -> np.ndarray:
    """RGBA: each channel stretched linearly between percentiles of the pixels where ``use``;
    pixels without a finite value in every band are transparent."""
    finite = np.isfinite(rgb).all(axis=-1)
    out = np.zeros((*rgb.shape[:-1], 4), dtype=np.float32)
    for i in range(rgb.shape[-1]):
        channel = rgb[..., i].astype(np.float32)
        sample = channel[finite & use]
        if sample.size == 0:
            continue
        lo, hi = np.percentile(sample, percentiles)
        scale = hi - lo if hi > lo else 1.0
        out[..., i] = np.nan_to_num(np.clip((channel - lo) / scale, 0.0, 1.0))
    out[..., 3] = finite
    return out


def _extent(obj: xr.DataArray, yx: tuple[str, str]) -> tuple[float, float, float, float] | None:
    """imshow extent (left, right, bottom, top) from pixel-centre coords."""
    try:
        x = np.asarray(obj[yx[1]].values, dtype=float)
        y = np.asarray(obj[yx[0]].values, dtype=float)
    except (KeyError, TypeError, ValueError):
        return None
    if x.size < 2 or y.size < 2:
        return None
    dx, dy = (x[-1] - x[0]) / (x.size - 1), (y[-1] - y[0]) / (y.size - 1)
    return (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2)


def _pyplot() -> Any:
    """pyplot, on the Agg backend when no display is there to show a window."""
    import matplotlib

    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if headless and "matplotlib.pyplot" not in sys.modules and "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def quicklook(
    image: xr.DataArray | xr.Dataset,
    mask: xr.DataArray,
    *,
    rgb: Sequence[Any] | None = None,
    wavelengths_nm: Sequence[float] | None = None,
    ax: Axes | None = None,
    alpha: float = 0.5,
    stretch: tuple[float, float] = (2, 98),
    max_size: int = 1024,
) -> Axes:
    """Draw an RGB composite of ``image`` with ``mask`` overlaid, and a legend; return the Axes.

    ``image`` is a ``(band, y, x)`` DataArray or a Dataset of one variable per band (stacked in
    variable order, the band labels being the variable names). ``rgb`` names three bands
    (labels of the band coordinate, or positions when it has none); by default the bands
    nearest 650/560/480 nm are used, from ``wavelengths_nm`` or from wavelength coords, else
    ``common_name`` (or band labels) red/green/blue, else the first three. Each channel
    is stretched between the ``stretch`` percentiles. Thick cloud is drawn blue, thin cloud a
    lighter blue, shadow dark purple; clear and nodata stay transparent. Both inputs are
    subsampled to at most ``max_size`` pixels a side before anything is computed, so a lazy
    full scene costs only the pixels shown.
    """
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    image = _single_time(_band_array(image), "image")
    mask = _single_time(mask, "mask")
    yx = spatial_dims(mask)
    if mask.dims != yx:
        raise InputError(f"mask must have dims {yx} (one time step), got {tuple(mask.dims)}")
    band = _band_dim(image, yx)
    grid_image = tuple(image.sizes.get(d) for d in yx)
    if grid_image != mask.shape:
        raise InputError(f"image grid {grid_image} and mask grid {mask.shape} differ")
    idx = _rgb_indices(image, band, rgb, wavelengths_nm)

    step = max(1, int(np.ceil(max(mask.shape) / max_size)))
    sub = {yx[0]: slice(None, None, step), yx[1]: slice(None, None, step)}
    composite = image.isel({band: idx}).isel(sub).transpose(*yx, band)
    flat = mask.isel(sub)
    pixels = np.asarray(composite.values, dtype=np.float32)
    classes = np.asarray(flat.values)

    flags = _flags(mask)
    nodata = _nodata(mask)
    shown = _stretch(pixels, stretch, use=classes != nodata)

    overlay = np.zeros((*classes.shape, 4), dtype=np.float32)
    handles = []
    for value, name in sorted(flags.items()):
        colour = CLASS_COLOURS.get(name, "#ff00ff")
        if colour is None:
            continue
        overlay[classes == value] = to_rgba(colour, alpha)
        handles.append(Patch(facecolor=colour, edgecolor="0.3", label=name.replace("_", " ")))

    if ax is None:
        _, ax = _pyplot().subplots(figsize=(7, 7))
    extent = _extent(flat, yx)
    ax.imshow(shown, extent=extent, interpolation="nearest")
    ax.imshow(overlay, extent=extent, interpolation="nearest")
    if handles:
        ax.legend(handles=handles, loc="upper right", framealpha=0.8, fontsize="small")
    title = str(mask.name or "cloud mask")
    if "time" in mask.coords and mask["time"].ndim == 0:
        title += f"  {np.datetime_as_string(mask['time'].values, unit='m')}"
    ax.set_title(title)
    if extent is None:
        ax.set_axis_off()
    else:
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize="x-small")
    return ax


def save_quicklook(
    image: xr.DataArray | xr.Dataset,
    mask: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    dpi: int = 120,
    **kwargs: Any,
) -> Path:
    """Render :func:`quicklook` straight to an image file (PNG by extension), no display needed.

    Uses a standalone Agg figure, so it works on headless workers and leaves pyplot alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 7))
    FigureCanvasAgg(fig)
    quicklook(image, mask, ax=fig.add_subplot(), **kwargs)
    fig.tight_layout()
    path = Path(os.fspath(path))
    fig.savefig(path, dpi=dpi)
    return path


def summary(mask: xr.DataArray) -> pd.DataFrame:
    """Cloud cover per class and time step, in percent (one row per time step).

    Class columns (from the mask's ``flag_meanings``) are percent of valid pixels, so they add
    to 100 for a time step with any valid pixel (NaN otherwise); values outside the flags, if
    any, appear as ``other``. ``nodata`` is percent of all pixels. One Dask pass over the mask.
    """
    import dask
    import pandas as pd

    flags = _flags(mask)
    nodata = _nodata(mask)
    classes = {v: n for v, n in sorted(flags.items()) if v != nodata}
    yx = spatial_dims(mask)
    spatial = list(yx)
    lead = [d for d in mask.dims if d not in yx]
    if len(lead) > 1:
        raise InputError(f"summary needs (y, x) or (time, y, x), got dims {tuple(mask.dims)}")
    counts = [(mask == value).sum(spatial) for value in [*classes, nodata]]
    computed = dask.compute(*counts)
    table = np.stack([np.atleast_1d(np.asarray(c, dtype=np.int64)) for c in computed], axis=-1)
    total = int(np.prod([mask.sizes[d] for d in spatial]))
    valid = total - table[:, -1:]
    other = valid[:, 0] - table[:, :-1].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(valid > 0, 100.0 * table[:, :-1] / np.maximum(valid, 1), np.nan)
    frame = pd.DataFrame(percent, columns=list(classes.values()))
    if other.any():
        frame["other"] = np.where(
            valid[:, 0] > 0, 100.0 * other / np.maximum(valid[:, 0], 1), np.nan
        )
    frame["nodata"] = 100.0 * table[:, -1] / total
    if lead:
        frame.index = pd.Index(mask[lead[0]].values, name=str(lead[0]))
    elif "time" in mask.coords and mask["time"].ndim == 0:
        frame.index = pd.Index([mask["time"].values], name="time")
    frame.columns.name = "percent"
    return frame
