"""Labelled training patches: one zarr v3 store, three builders, and the paper's directory format.

Store layout (``format = "xsensei-patches"``, ``format_version = 1``)
--------------------------------------------------------------------
Patches share one spatial size ``(H, W)`` but not their band count, so bands are stored *ragged*
(CSR style) instead of padded: every band of every patch is one row of a flat band axis, and
``band_offsets`` says which rows belong to which patch. No band limit, no padding on disk, one
chunk per band (a random band subset reads only those bands), and appending is a resize.

================  ==================  ===========================================================
array             shape / dtype       meaning
================  ==================  ===========================================================
``images``        (Σbands, H, W) f4   model units (TOA reflectance 0-1, thermal as normalised BT,
                                      paper eq. 4), NaN = no data; chunks ``(1, H, W)``
``descriptors``   (Σbands, 3) f8      [min, centre, max] wavelength per band, nm
``band_offsets``  (P + 1,) i8         patch ``i`` owns band rows ``off[i]:off[i+1]``
``labels``        (P, H, W) u1        :data:`LABEL_VALUES`, 255 unlabelled; chunks ``(1, H, W)``
``metadata``      (P,) str            one JSON object per patch (see :func:`make_metadata`)
================  ==================  ===========================================================

Group attributes: ``format``, ``format_version``, ``patch_size`` ``[H, W]``, ``label_values``.
One writer at a time; any number of readers (a DataLoader's workers) once written.

Images are stored in *model units*, converted by the same path as inference
(:func:`xsensei.band_metadata.resolve_bands` -> :func:`xsensei.radiometry.scale_from_metadata`
-> :func:`xsensei.radiometry.to_model_units`), so a patch needs no radiometry when trained on.

Labels: 0 clear, 1 thick cloud, 2 thin cloud, 3 cloud shadow, 4 *cloud* (thickness unknown:
sources labelling only cloud / not cloud), 255 unlabelled or no data. Each patch records its
``label_scheme`` (the classes its source can tell apart, e.g. ``"clear,cloud"``), because 0 in a
cloud-only source may hide a shadow and 4 may be thick or thin.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from xsensei.band_metadata import THERMAL_CENTRE_NM
from xsensei.errors import InputError

if TYPE_CHECKING:
    import pystac
    import xarray as xr

__all__ = [
    "CLOUD_LABELS",
    "FORMAT",
    "LABEL_NAMES",
    "LABEL_VALUES",
    "NODATA_LABEL",
    "SCHEME_CLOUD",
    "SCHEME_CLOUD_SHADOW",
    "SCHEME_FULL",
    "LabelMap",
    "Patch",
    "PatchStore",
    "build_store",
    "class_value",
    "export_paper_dirs",
    "make_metadata",
    "patch_windows",
    "patches_from_paper_dirs",
    "patches_from_stac",
    "patches_from_xarray",
    "read_paper_dir",
    "stac_item_arrays",
    "write_paper_dir",
]

FORMAT = "xsensei-patches"
FORMAT_VERSION = 1

#: Label value of each class in stores (product masks use the same 0-3; 4 exists only here).
LABEL_VALUES: dict[str, int] = {
    "clear": 0,
    "thick_cloud": 1,
    "thin_cloud": 2,
    "cloud_shadow": 3,
    "cloud": 4,
}
LABEL_NAMES: dict[int, str] = {v: k for k, v in LABEL_VALUES.items()}
NODATA_LABEL = 255
#: Label values that count as cloud in the paper's cloud-vs-rest metrics.
CLOUD_LABELS: tuple[int, ...] = (1, 2, 4)

SCHEME_FULL = "clear,thick_cloud,thin_cloud,cloud_shadow"
SCHEME_CLOUD_SHADOW = "clear,cloud_shadow,cloud"
SCHEME_CLOUD = "clear,cloud"

#: Source class names (normalised: lower case, ``_`` for spaces / hyphens / slashes) -> value.
_CLASS_ALIASES: dict[str, int] = {
    **{k: 0 for k in ("clear", "land", "water", "snow", "ice", "snow_ice", "ice_snow", "flooded",
                      "clear_sky", "background", "not_cloud", "no_cloud", "non_cloud",
                      "cloud_free", "clear_land", "clear_water")},
    **{k: 1 for k in ("thick", "thick_cloud", "cloud_thick", "opaque_cloud", "opaque")},
    **{k: 2 for k in ("thin", "thin_cloud", "cloud_thin", "cirrus", "semi_transparent_cloud",
                      "semitransparent_cloud", "haze")},
    **{k: 3 for k in ("shadow", "shadows", "cloud_shadow", "shadow_over_water")},
    **{k: 4 for k in ("cloud", "clouds", "cloudy", "cloud_any")},
    **{k: NODATA_LABEL for k in ("fill", "nodata", "no_data", "none", "unlabelled", "unlabeled",
                                 "unknown", "invalid", "ignore", "not_labelled", "null")},
}


def _normalise_class_name(name: str) -> str:
    return re.sub(r"[\s\-/]+", "_", str(name).strip().lower())


def class_value(name: str | int) -> int:
    """Store label value for a source class name (or an int already in store values)."""
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        value = int(name)
        if value not in LABEL_NAMES and value != NODATA_LABEL:
            raise ValueError(f"label value {value} is not one of {sorted(LABEL_NAMES)} or 255")
        return value
    key = _normalise_class_name(str(name))
    if key not in _CLASS_ALIASES:
        raise ValueError(
            f"unknown class name {name!r}; pass class_map= mapping it to one of "
            f"{sorted(LABEL_VALUES)} or 'nodata'"
        )
    return _CLASS_ALIASES[key]


def _scheme_of(values: Iterable[int]) -> str:
    """Comma-joined class names of the label values a source can produce (in value order)."""
    return ",".join(LABEL_NAMES[v] for v in sorted(set(values)) if v != NODATA_LABEL)


class LabelMap:
    """Source label values -> store label values, via class names; unmapped values raise.

    ``mapping`` maps each source value to a class name (``"cloud"``, ``"Cloud shadow"``,
    ``"FILL"``, ...) or directly to a store value. ``scheme`` lists the classes the source can
    tell apart.
    """

    def __init__(self, mapping: Mapping[Any, str | int], scheme: str | None = None) -> None:
        # any integer source value: fill values such as -1, 65535 or -9999 included
        self.mapping = {int(k): class_value(v) for k, v in mapping.items()}
        if not self.mapping:
            raise ValueError("the label map is empty")
        self.scheme = scheme or _scheme_of(self.mapping.values())
        self._keys = np.array(sorted(self.mapping), dtype=np.int64)
        self._values = np.array([self.mapping[k] for k in self._keys], dtype=np.uint8)

    @classmethod
    def identity(cls, scheme: str = SCHEME_FULL) -> LabelMap:
        """Labels already in store values."""
        return cls({**{v: v for v in LABEL_NAMES}, NODATA_LABEL: NODATA_LABEL}, scheme=scheme)

    def __call__(self, labels: NDArray[Any]) -> NDArray[np.uint8]:
        """Store values; NaN (a masked float label) is unlabelled (255) whatever the map."""
        arr = np.asarray(labels)
        missing = np.zeros(arr.shape, dtype=bool)
        if arr.dtype.kind == "f":
            missing = ~np.isfinite(arr)
            arr = np.where(missing, 0, arr)
            if not np.all(arr == np.round(arr)):
                raise ValueError("float labels must hold whole numbers")
        arr = arr.astype(np.int64)
        pos = np.clip(np.searchsorted(self._keys, arr), 0, self._keys.size - 1)
        known = (self._keys[pos] == arr) | missing
        if not known.all():
            unknown = np.unique(arr[~known])
            raise ValueError(
                f"label values {unknown.tolist()} are not in the label map "
                f"{sorted(self.mapping)}; pass class_map= / label_map= covering them"
            )
        out = self._values[pos]
        out[missing] = NODATA_LABEL
        return out


def make_metadata(
    *,
    sensor: str | None = None,
    scene_id: str | None = None,
    resolution_m: float | None = None,
    tags: Sequence[str] = (),
    label_scheme: str = SCHEME_FULL,
    band_names: Sequence[str] | None = None,
    window: Sequence[int] | None = None,
    source: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The standard per-patch metadata record (JSON-serialisable); ``extra`` keys are kept."""
    meta: dict[str, Any] = {
        "sensor": sensor,
        "scene_id": scene_id,
        "resolution_m": None if resolution_m is None else float(resolution_m),
        "tags": [str(t) for t in tags],
        "label_scheme": label_scheme,
        "band_names": None if band_names is None else [str(b) for b in band_names],
        "window": None if window is None else [int(w) for w in window],
        "source": source,
    }
    meta.update(extra)
    json.dumps(meta)  # fail early on values a store cannot hold
    return meta


@dataclass
class Patch:
    """One labelled patch: ``image`` (C, H, W) float32 in model units, ``label`` (H, W) uint8,
    ``descriptors`` (C, 3) nm, ``metadata`` (see :func:`make_metadata`)."""

    image: NDArray[np.float32]
    label: NDArray[np.uint8]
    descriptors: NDArray[np.float64]
    metadata: dict[str, Any] = field(default_factory=make_metadata)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.label = np.asarray(self.label)
        self.descriptors = np.asarray(self.descriptors, dtype=np.float64)
        if self.image.ndim != 3:
            raise ValueError(f"image must be (C, H, W), got shape {self.image.shape}")
        if self.label.shape != self.image.shape[1:]:
            raise ValueError(f"label {self.label.shape} must be (H, W) = {self.image.shape[1:]}")
        if self.label.dtype != np.uint8:
            raise ValueError(f"label must be uint8 store values, got {self.label.dtype}")
        if self.descriptors.shape != (self.image.shape[0], 3):
            raise ValueError(
                f"descriptors must be ({self.image.shape[0]}, 3) nm, got {self.descriptors.shape}"
            )
        from xsensei.descriptors import encode_wavelengths

        encode_wavelengths(self.descriptors)  # refuses um, or nm SEnSeI cannot encode, now
        self.metadata = dict(self.metadata)

    @property
    def tags(self) -> list[str]:
        return list(self.metadata.get("tags") or [])


# =============================================================================================
# the zarr store


def _is_patch_store(path: Path) -> bool:
    """Whether ``path`` holds a store :meth:`PatchStore.create` wrote (its format attr)."""
    import zarr

    try:
        return zarr.open_group(str(path), mode="r").attrs.get("format") == FORMAT
    except Exception:
        return False


class PatchStore:
    """A zarr v3 patch store (layout in the module docstring). Open with ``mode="r"``/``"r+"``."""

    def __init__(self, path: str | os.PathLike[str], mode: Literal["r", "r+"] = "r") -> None:
        self.path = Path(path)
        self.mode = mode
        self._open()

    def _open(self) -> None:
        import zarr

        self._group = zarr.open_group(str(self.path), mode=self.mode)
        attrs = dict(self._group.attrs)
        if attrs.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not an xsensei patch store (format {FORMAT!r})")
        if attrs.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{self.path}: patch store version {attrs.get('format_version')!r}, this xsensei "
                f"reads version {FORMAT_VERSION}"
            )
        self.patch_size: tuple[int, int] = tuple(int(v) for v in attrs["patch_size"])  # type: ignore[assignment]
        self._images = self._group["images"]
        self._descriptors = self._group["descriptors"]
        self._offsets_arr = self._group["band_offsets"]
        self._labels = self._group["labels"]
        self._metadata = self._group["metadata"]
        self._offsets = np.asarray(self._offsets_arr[:], dtype=np.int64)
        self._meta_cache: list[dict[str, Any]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "mode": self.mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.mode = state["path"], state["mode"]
        self._open()

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        patch_size: int | Sequence[int],
        *,
        overwrite: bool = False,
        attrs: Mapping[str, Any] | None = None,
    ) -> PatchStore:
        """A new empty store for patches of ``patch_size`` (int or ``(H, W)``)."""
        import zarr

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        if path.exists() and not _is_patch_store(path):
            raise FileExistsError(
                f"{path} exists and is not an xsensei patch store; overwrite=True replaces "
                "only a patch store: choose a new path or remove it yourself"
            )
        h, w = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        group = zarr.open_group(str(path), mode="w")
        group.attrs.update(
            {
                **dict(attrs or {}),
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "patch_size": [int(h), int(w)],
                "label_values": {**LABEL_VALUES, "unlabelled": NODATA_LABEL},
            }
        )
        group.create_array("images", shape=(0, h, w), chunks=(1, h, w), dtype="float32",
                           fill_value=np.nan)
        group.create_array("descriptors", shape=(0, 3), chunks=(4096, 3), dtype="float64",
                           fill_value=np.nan)
        offsets = group.create_array("band_offsets", shape=(1,), chunks=(4096,), dtype="int64",
                                     fill_value=0)
        offsets[:] = np.zeros(1, dtype=np.int64)
        group.create_array("labels", shape=(0, h, w), chunks=(1, h, w), dtype="uint8",
                           fill_value=NODATA_LABEL)
        group.create_array("metadata", shape=(0,), chunks=(1024,), dtype=str)
        return cls(path, mode="r+")

    # -- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @property
    def band_counts(self) -> NDArray[np.int64]:
        return np.diff(self._offsets)

    def band_count(self, index: int) -> int:
        i = self._check(index)
        return int(self._offsets[i + 1] - self._offsets[i])

    def _check(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"patch {index} out of range for a store of {n}")
        return index % n

    def metadata(self, index: int) -> dict[str, Any]:
        """Metadata of one patch (all are read and cached on first use)."""
        return self.all_metadata()[self._check(index)]

    def all_metadata(self) -> list[dict[str, Any]]:
        if self._meta_cache is None:
            raw = self._metadata[:] if len(self) else []
            self._meta_cache = [json.loads(str(s)) for s in raw]
        return self._meta_cache

    def descriptors(self, index: int, bands: Sequence[int] | None = None) -> NDArray[np.float64]:
        i = self._check(index)
        rows = self._descriptors[self._offsets[i] : self._offsets[i + 1]]
        return np.asarray(rows if bands is None else rows[list(bands)], dtype=np.float64)

    def read_image(
        self,
        index: int,
        bands: Sequence[int] | None = None,
        window: tuple[int, int, int, int] | None = None,
    ) -> NDArray[np.float32]:
        """``(C, h, w)`` of patch ``index``: only ``bands`` (positions) and ``window``
        ``(y0, y1, x0, x1)`` are read."""
        i = self._check(index)
        start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
        ys, xs = _window_slices(window)
        if bands is None:
            return np.asarray(self._images[start:stop, ys, xs], dtype=np.float32)
        rows = np.asarray(bands, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= stop - start):
            raise IndexError(f"band positions {rows.tolist()} out of range for {stop - start}")
        if rows.size == 0:
            return np.zeros((0, *self.patch_size), np.float32)[:, ys, xs]
        order = np.argsort(rows)
        out = np.asarray(self._images.oindex[rows[order] + start, ys, xs], dtype=np.float32)
        return out[np.argsort(order)]

    def read_label(
        self, index: int, window: tuple[int, int, int, int] | None = None
    ) -> NDArray[np.uint8]:
        ys, xs = _window_slices(window)
        return np.asarray(self._labels[self._check(index), ys, xs], dtype=np.uint8)

    def __getitem__(self, index: int) -> Patch:
        return Patch(
            self.read_image(index),
            self.read_label(index),
            self.descriptors(index),
            dict(self.metadata(index)),
        )

    def __iter__(self) -> Iterator[Patch]:
        for i in range(len(self)):
            yield self[i]

    def indices(self, tag: str | None = None) -> list[int]:
        """Patch positions, optionally only those carrying ``tag``."""
        if tag is None:
            return list(range(len(self)))
        return [i for i, m in enumerate(self.all_metadata()) if tag in (m.get("tags") or [])]

    # -- writing --------------------------------------------------------------------------------

    def append(self, patch: Patch) -> None:
        self.extend([patch])

    def extend(self, patches: Iterable[Patch], batch_size: int = 32) -> int:
        """Append patches (batched writes); returns how many were written."""
        if self.mode == "r":
            raise PermissionError(f"{self.path} is open read-only; open it with mode='r+'")
        written = 0
        batch: list[Patch] = []
        for patch in patches:
            if patch.image.shape[1:] != self.patch_size:
                raise ValueError(
                    f"patch of size {patch.image.shape[1:]} in a store of {self.patch_size}"
                )
            batch.append(patch)
            if len(batch) >= batch_size:
                written += self._write(batch)
                batch = []
        if batch:
            written += self._write(batch)
        return written

    def _write(self, batch: list[Patch]) -> int:
        p0 = len(self)
        b0 = int(self._offsets[-1])
        counts = [p.image.shape[0] for p in batch]
        b1 = b0 + sum(counts)
        p1 = p0 + len(batch)
        h, w = self.patch_size
        self._images.resize((b1, h, w))
        self._descriptors.resize((b1, 3))
        self._labels.resize((p1, h, w))
        self._metadata.resize((p1,))
        self._offsets_arr.resize((p1 + 1,))
        if b1 > b0:
            self._images[b0:b1] = np.concatenate([p.image for p in batch], axis=0)
            self._descriptors[b0:b1] = np.concatenate([p.descriptors for p in batch], axis=0)
        self._labels[p0:p1] = np.stack([p.label for p in batch])
        self._metadata[p0:p1] = np.array([json.dumps(p.metadata) for p in batch], dtype=object)
        new_offsets = b0 + np.cumsum(counts, dtype=np.int64)
        self._offsets_arr[p0 + 1 : p1 + 1] = new_offsets
        self._offsets = np.concatenate([self._offsets, new_offsets])
        if self._meta_cache is not None:
            self._meta_cache.extend(dict(p.metadata) for p in batch)
        return len(batch)


def _window_slices(window: tuple[int, int, int, int] | None) -> tuple[slice, slice]:
    if window is None:
        return slice(None), slice(None)
    y0, y1, x0, x1 = (int(v) for v in window)
    return slice(y0, y1), slice(x0, x1)


def build_store(
    path: str | os.PathLike[str],
    patches: Iterable[Patch],
    *,
    patch_size: int | Sequence[int] | None = None,
    overwrite: bool = False,
    append: bool = False,
) -> PatchStore:
    """Write ``patches`` to a new store (or ``append=True`` to an existing one).

    Without ``patch_size`` the first patch decides it.
    """
    path = Path(path)
    if append and path.exists():
        store = PatchStore(path, mode="r+")
        store.extend(patches)
        return store
    iterator = iter(patches)
    first = next(iterator, None)
    if patch_size is None:
        if first is None:
            raise ValueError("no patches to write and no patch_size given")
        patch_size = tuple(first.image.shape[1:])
    store = PatchStore.create(path, patch_size, overwrite=overwrite)
    if first is not None:
        store.extend(_chain([first], iterator))
    return store


def _chain(head: list[Patch], tail: Iterator[Patch]) -> Iterator[Patch]:
    yield from head
    yield from tail


# =============================================================================================
# (a) xarray cubes


def patch_windows(
    height: int, width: int, size: int, stride: int | None = None
) -> list[tuple[int, int]]:
    """Top-left corners of ``size`` patches every ``stride`` px; the last row / column is moved
    back to the scene edge so the whole scene is covered. Empty when the scene is too small."""
    stride = stride or size
    if stride <= 0 or size <= 0:
        raise ValueError("patch size and stride must be positive")

    def starts(n: int) -> list[int]:
        if n < size:
            return []
        out = list(range(0, n - size + 1, stride))
        if out[-1] != n - size:
            out.append(n - size)
        return out

    return [(r, c) for r in starts(height) for c in starts(width)]


def _resolution_of(arr: xr.DataArray) -> float | None:
    """The pixel size in metres, or None where it is not known in metres (a CRS in degrees)."""
    try:
        res = abs(float(arr.rio.resolution()[0]))
        crs = arr.rio.crs
    except Exception:
        return None
    if crs is not None and crs.is_geographic:
        return None
    return res if np.isfinite(res) and res > 0 else None


def _sensor_attr(arr: xr.DataArray) -> str | None:
    for key in ("platform", "constellation", "spacecraft_id", "sensor"):
        value = arr.attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _label_on_grid(label: xr.DataArray, image: xr.DataArray, ydim: str, xdim: str
                   ) -> NDArray[Any]:
    """The label's values in the image's (y, x) order: a size-1 band dim squeezed (as
    ``rioxarray.open_rasterio`` reads a label file), dims transposed, and an axis whose coords
    run the other way flipped; coords that are on another grid are refused."""
    from xsensei.engine.output import spatial_dims

    extra = [d for d in label.dims if label.sizes[d] == 1 and d not in (ydim, xdim)]
    label = label.squeeze(extra, drop=True) if extra else label
    try:
        ly, lx = spatial_dims(label)
    except InputError:  # unnamed dims (dim_0, dim_1): taken as (y, x), as a numpy array is
        return np.asarray(label.values)
    label = label.transpose(ly, lx)
    for ldim, idim in ((ly, ydim), (lx, xdim)):
        if ldim not in label.coords or idim not in image.coords:
            continue
        have = np.asarray(label[ldim].values, dtype=np.float64)
        want = np.asarray(image[idim].values, dtype=np.float64)
        if have.shape != want.shape:
            break  # the shape check names it
        step = abs(float(want[1] - want[0])) if want.size > 1 else 1.0
        if np.allclose(have, want, rtol=0, atol=1e-3 * step):
            continue
        if np.allclose(have[::-1], want, rtol=0, atol=1e-3 * step):
            label = label.isel({ldim: slice(None, None, -1)})
            continue
        raise ValueError(
            f"the label's {ldim!r} coords ({have[0]:g} .. {have[-1]:g}) are not the image's "
            f"{idim!r} coords ({want[0]:g} .. {want[-1]:g}): put the label on the image's grid "
            "first (e.g. label.rio.reproject_match(image))"
        )
    return np.asarray(label.values)


def patches_from_xarray(
    image: xr.DataArray,
    label: xr.DataArray | NDArray[Any],
    *,
    patch_size: int,
    stride: int | None = None,
    sensor: str | None = None,
    descriptors: Any = None,
    scale: Any = None,
    offset: Any = None,
    nodata: float | None = None,
    band_dim: str = "band",
    label_map: LabelMap | Mapping[Any, str | int] | None = None,
    label_scheme: str | None = None,
    scene_id: str | None = None,
    resolution_m: float | None = None,
    tags: Sequence[str] = (),
    min_labelled: float = 0.0,
    invalid: Literal["any", "all", "none"] = "any",
    source: str = "xarray",
    extra_metadata: Mapping[str, Any] | None = None,
) -> Iterator[Patch]:
    """Cut a ``(band, y, x)`` image and its ``(y, x)`` label cube into patches.

    Wavelengths come from :func:`~xsensei.band_metadata.resolve_bands` (``descriptors=``,
    coords, attrs, or band names + ``sensor``) and values are converted to model units exactly
    as :func:`xsensei.cloudmask` does (``scale``/``offset`` or STAC / CF metadata; thermal bands
    to normalised BT), and refused as it refuses them (DN without a scale, percent, a scale
    applied twice). A label DataArray is read in the image's ``(y, x)`` order (a size-1 band
    dim squeezed, dims transposed, an axis with reversed coords flipped) and must lie on the
    image's grid. Labels are store values unless ``label_map`` maps source values. Pixels
    where ``invalid`` (``"any"`` / ``"all"``) bands are missing become 255. Patches whose
    labelled fraction is below ``min_labelled`` are skipped.
    """
    import xarray as xr

    from xsensei.api import check_model_units, nodata_of
    from xsensei.band_metadata import find_band_dim, resolve_bands
    from xsensei.engine.output import spatial_dims
    from xsensei.radiometry import metadata_scale_hint, scale_from_metadata, to_model_units

    ydim, xdim = spatial_dims(image)
    resolved = resolve_bands(image, band_dim=band_dim, descriptors=descriptors, sensor=sensor)
    dim = find_band_dim(image, band_dim)
    arr = image.isel({dim: list(resolved.indices)}).transpose(dim, ydim, xdim)
    spec = scale_from_metadata(image, resolved, scale=scale, offset=offset)
    if spec is None and np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"integer image ({arr.dtype}) without a scale: pass scale=/offset= or STAC raster "
            "metadata so that patches hold reflectance"
        )
    if nodata is None:
        nodata = nodata_of(image)

    lab = (_label_on_grid(label, arr, ydim, xdim) if isinstance(label, xr.DataArray)
           else np.asarray(label))
    if lab.shape != (arr.sizes[ydim], arr.sizes[xdim]):
        raise ValueError(f"label shape {lab.shape} differs from the image grid "
                         f"{(arr.sizes[ydim], arr.sizes[xdim])}")
    if label_map is None:
        lmap = LabelMap.identity(label_scheme or SCHEME_FULL)
    elif isinstance(label_map, LabelMap):
        lmap = label_map
    else:
        lmap = LabelMap(label_map, scheme=label_scheme)
    labels = lmap(lab)

    meta_base = dict(
        sensor=sensor or resolved.sensor or _sensor_attr(image),
        scene_id=scene_id if scene_id is not None else image.attrs.get("scene_id",
                                                                       image.attrs.get("id")),
        resolution_m=resolution_m if resolution_m is not None else _resolution_of(image),
        tags=list(tags),
        label_scheme=lmap.scheme,
        band_names=list(resolved.names),
        source=source,
        **dict(extra_metadata or {}),
    )
    wl = np.array(resolved.wavelengths_nm, dtype=np.float64)
    windows = patch_windows(lab.shape[0], lab.shape[1], patch_size, stride)
    if not windows:
        warnings.warn(
            f"scene {lab.shape} is smaller than patch_size {patch_size}: no patches",
            UserWarning, stacklevel=2,
        )
    rows = sorted({r for r, _ in windows})
    hint = metadata_scale_hint(image, resolved) if spec is None else None
    for r in rows:
        raw = np.asarray(arr.isel({ydim: slice(r, r + patch_size)}).values)
        values = raw.astype(np.float32, copy=True)
        if nodata is not None and np.isfinite(nodata):
            values[raw == nodata] = np.nan
        values[~np.isfinite(values)] = np.nan
        values = to_model_units(values, resolved, spec)
        # the checks cloudmask() makes: patches must hold reflectance, not DN or percent
        check_model_units(raw, values, resolved, spec, hint)
        for rr, c in windows:
            if rr != r:
                continue
            img = np.ascontiguousarray(values[:, :, c : c + patch_size])
            lab_patch = labels[r : r + patch_size, c : c + patch_size].copy()
            if invalid != "none":
                missing = ~np.isfinite(img)
                bad = missing.any(0) if invalid == "any" else missing.all(0)
                lab_patch[bad] = NODATA_LABEL
            if min_labelled > 0 and np.mean(lab_patch != NODATA_LABEL) < min_labelled:
                continue
            yield Patch(img, lab_patch, wl.copy(), make_metadata(window=(r, c), **meta_base))


# =============================================================================================
# (b) STAC items


#: Dask chunks for STAC assets: lazy reads, so whole scenes never need to fit in memory.
_CHUNKS = {"y": 2048, "x": 2048}


def _stac_bands(asset: pystac.Asset) -> list[dict[str, Any]]:
    """Per-band dicts of an asset: STAC 1.1 ``bands`` or 1.0 ``eo:bands`` merged with
    ``raster:bands``, normalised to ``name, common_name, center_um, fwhm_um, scale, offset,
    nodata``."""
    extra = asset.extra_fields
    out: list[dict[str, Any]] = []
    if isinstance(extra.get("bands"), list):
        for b in extra["bands"]:
            out.append({
                "name": b.get("name"),
                "common_name": b.get("eo:common_name"),
                "center_um": b.get("eo:center_wavelength"),
                "fwhm_um": b.get("eo:full_width_half_max"),
                "scale": b.get("raster:scale"),
                "offset": b.get("raster:offset"),
                "nodata": b.get("nodata", extra.get("nodata")),
            })
        return out
    eo = extra.get("eo:bands") or []
    raster = extra.get("raster:bands") or []
    for i in range(max(len(eo), len(raster))):
        e = eo[i] if i < len(eo) else {}
        r = raster[i] if i < len(raster) else {}
        out.append({
            "name": e.get("name"),
            "common_name": e.get("common_name"),
            "center_um": e.get("center_wavelength"),
            "fwhm_um": e.get("full_width_half_max"),
            "scale": r.get("scale"),
            "offset": r.get("offset"),
            "nodata": r.get("nodata"),
        })
    return out


def _nodata_value(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        return {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}.get(text, float(text))
    return float(value)


def _classes_from_list(entries: Any) -> dict[int, str]:
    """``[{value, name}]`` (classification extension style) -> mapping."""
    out: dict[int, str] = {}
    for e in entries or []:
        if isinstance(e, Mapping) and "value" in e:
            out[int(e["value"])] = str(e.get("name") or e.get("description") or e["value"])
    return out


def _label_classes(item: pystac.Item, asset: pystac.Asset) -> dict[int, str]:
    """value -> class name of a raster label asset, from the classification or label extension.

    Order: ``classification:classes`` on the asset or its first band; then ``label:classes``
    whose ``classes`` are ``{value, name}`` objects, or names (value = position).
    """
    extra = asset.extra_fields
    found = _classes_from_list(extra.get("classification:classes"))
    for key in ("raster:bands", "bands"):
        if not found and isinstance(extra.get(key), list) and extra[key]:
            found = _classes_from_list(extra[key][0].get("classification:classes"))
    if found:
        return found
    for group in item.properties.get("label:classes") or []:
        classes = group.get("classes") if isinstance(group, Mapping) else None
        if not classes:
            continue
        if all(isinstance(c, Mapping) for c in classes):
            found.update(_classes_from_list(classes))
        elif all(isinstance(c, str) for c in classes):
            found.update({i: c for i, c in enumerate(classes)})
        else:
            raise ValueError(
                f"item {item.id}: label:classes lists values {classes} without names; add "
                "classification:classes to the label asset or pass class_map="
            )
    if not found:
        raise ValueError(
            f"item {item.id}: no class names for the label asset (label:classes or "
            "classification:classes); pass class_map="
        )
    return found


def _label_asset_key(item: pystac.Item, label_asset: str | None) -> str:
    if label_asset is not None:
        if label_asset not in item.assets:
            raise KeyError(f"item {item.id} has no asset {label_asset!r}")
        return label_asset
    keys = [k for k, a in item.assets.items() if "labels" in (a.roles or [])]
    keys = keys or [k for k in item.assets if k in ("labels", "label", "mask")]
    if not keys:
        raise KeyError(
            f"item {item.id}: no label asset (role 'labels'); pass label_asset= naming it"
        )
    return keys[0]


def _image_item(item: pystac.Item) -> pystac.Item:
    """The item holding the imagery: ``item`` itself, or a label item's ``source`` item."""
    import pystac

    has_bands = any(_stac_bands(a) for a in item.assets.values())
    if has_bands:
        return item
    for link in item.get_links("source"):
        target = link.resolve_stac_object(root=item.get_root()).target
        if isinstance(target, pystac.Item):
            return target
    raise ValueError(f"item {item.id}: no assets with band metadata and no 'source' item link")


def stac_item_arrays(
    item: pystac.Item,
    *,
    label_asset: str | None = None,
    image_assets: Sequence[str] | None = None,
    class_map: Mapping[Any, str | int] | None = None,
) -> tuple[xr.DataArray, xr.DataArray | None, LabelMap | None]:
    """Image ``(band, y, x)`` (raw values, stackstac-style wavelength coords in um, ``raster:bands``
    attrs, NaN for nodata) and the label ``(y, x)`` with its :class:`LabelMap`.

    Every asset is read with rioxarray and must share one grid. Items without a label asset
    give ``(image, None, None)`` when ``label_asset`` is not requested.
    """
    import rioxarray
    import xarray as xr

    images = _image_item(item)
    try:
        lkey: str | None = _label_asset_key(item, label_asset)
    except KeyError:
        if label_asset is not None:
            raise
        lkey = None
    keys = list(image_assets) if image_assets is not None else [
        k for k, a in images.assets.items()
        if k != lkey and any(b.get("center_um") is not None for b in _stac_bands(a))
    ]
    if not keys:
        raise ValueError(f"item {images.id}: no image assets with wavelengths")
    arrays, names, centres, widths, commons, raster = [], [], [], [], [], []
    int_nodata: set[float] = set()
    for key in keys:
        asset = images.assets[key]
        bands = _stac_bands(asset)
        da = rioxarray.open_rasterio(asset.get_absolute_href(), masked=False, chunks=_CHUNKS)
        if bands and len(bands) != da.sizes["band"]:
            raise ValueError(f"asset {key}: {len(bands)} bands in metadata, "
                             f"{da.sizes['band']} in the file")
        for i in range(da.sizes["band"]):
            b = bands[i] if bands else {}
            band = da.isel(band=i, drop=True)
            nodata = _nodata_value(b.get("nodata"))
            if nodata is None:
                nodata = band.rio.nodata
            if band.dtype.kind == "f" and nodata is not None and not np.isnan(nodata):
                band = band.where(band != nodata)
            elif band.dtype.kind in "iu" and nodata is not None:
                int_nodata.add(float(nodata))
            arrays.append(band)
            names.append(b.get("name") or (key if da.sizes["band"] == 1 else f"{key}_{i + 1}"))
            centres.append(b.get("center_um"))
            widths.append(b.get("fwhm_um"))
            commons.append(b.get("common_name"))
            raster.append({"scale": b.get("scale"), "offset": b.get("offset")})
    kinds = {a.dtype.kind in "iu" for a in arrays}
    if len(kinds) > 1:
        raise ValueError(f"item {images.id}: integer and float image assets cannot be mixed")
    if len(int_nodata) > 1:
        raise ValueError(f"item {images.id}: integer assets with different nodata values "
                         f"{sorted(int_nodata)}")
    first = arrays[0]
    for key, a in zip(keys, arrays, strict=False):
        if a.shape != first.shape or a.rio.transform() != first.rio.transform():
            raise ValueError(f"asset {key} is on another grid; resample the assets to one grid")
    image = xr.concat(arrays, dim="band", coords="minimal", compat="override", join="override")
    image = image.assign_coords(
        band=names,
        center_wavelength=("band", np.array(centres, dtype=object)),
        full_width_half_max=("band", np.array(widths, dtype=object)),
        common_name=("band", np.array(commons, dtype=object)),
    )
    props = images.properties
    image.attrs = {
        "raster:bands": raster,
        "id": images.id,
        **{k: props[k] for k in ("platform", "constellation") if isinstance(props.get(k), str)},
    }
    if "gsd" in props:
        image.attrs["gsd"] = props["gsd"]
    if int_nodata:
        image.attrs["nodata"] = int_nodata.pop()
    if lkey is None:
        return image, None, None
    lasset = item.assets[lkey]
    mapping = dict(class_map) if class_map is not None else _label_classes(item, lasset)
    lab = rioxarray.open_rasterio(lasset.get_absolute_href(), masked=False).load()
    lab = lab.isel(band=0, drop=True)
    lnodata = lab.rio.nodata
    if lnodata is not None and np.isfinite(lnodata) and int(lnodata) not in mapping:
        mapping[int(lnodata)] = NODATA_LABEL
    if lab.shape != first.shape or lab.rio.transform() != first.rio.transform():
        raise ValueError(f"item {item.id}: the label asset is on another grid than the image")
    return image, lab, LabelMap(mapping)


def _stac_items(source: Any) -> list[pystac.Item]:
    import pystac

    if isinstance(source, (str, os.PathLike)):
        source = pystac.read_file(str(source))
    if isinstance(source, pystac.Item):
        return [source]
    if isinstance(source, pystac.Catalog):  # Collections are Catalogs
        return list(source.get_items(recursive=True))
    if isinstance(source, pystac.ItemCollection):
        return list(source.items)
    items = list(source)
    if not all(isinstance(i, pystac.Item) for i in items):
        raise TypeError("expected STAC Items, an ItemCollection, a Catalog or a path to one")
    return items


def _is_label_item(item: pystac.Item) -> bool:
    return "label:type" in item.properties


def patches_from_stac(
    source: Any,
    *,
    patch_size: int,
    stride: int | None = None,
    label_asset: str | None = None,
    image_assets: Sequence[str] | None = None,
    class_map: Mapping[Any, str | int] | None = None,
    tags: Sequence[str] | Callable[[pystac.Item], Sequence[str]] = (),
    min_labelled: float = 0.0,
    invalid: Literal["any", "all", "none"] = "any",
) -> Iterator[Patch]:
    """Patches from STAC items with labelled raster assets (a static catalog is enough).

    ``source``: an Item, Items, an ItemCollection, a Catalog / Collection, or a path to one.
    Label items (``label:type``) are used; when a catalog holds both source and label items,
    source items without a label asset are skipped. Bands need ``eo:bands`` (STAC 1.0,
    ``center_wavelength`` / ``full_width_half_max`` in um) or ``bands`` (1.1,
    ``eo:center_wavelength``); scale / offset / nodata come from ``raster:bands`` or the 1.1
    ``raster:*`` fields. Label classes: ``label:classes`` or ``classification:classes``
    (value -> name, names mapped by :func:`class_value`), or ``class_map=``.
    """
    items = _stac_items(source)
    if any(_is_label_item(i) for i in items):
        items = [i for i in items if _is_label_item(i)]
    for item in items:
        if _is_label_item(item) and item.properties["label:type"] != "raster":
            raise ValueError(f"item {item.id}: label:type {item.properties['label:type']!r}; "
                             "only raster labels are supported")
        image, label, lmap = stac_item_arrays(
            item, label_asset=label_asset, image_assets=image_assets, class_map=class_map
        )
        if label is None or lmap is None:
            continue
        item_tags = tags(item) if callable(tags) else tags
        sensor = image.attrs.get("platform") or image.attrs.get("constellation")
        yield from patches_from_xarray(
            image, label, patch_size=patch_size, stride=stride, sensor=sensor, label_map=lmap,
            scene_id=item.id, resolution_m=image.attrs.get("gsd"), tags=list(item_tags),
            min_labelled=min_labelled, invalid=invalid, source="stac",
        )


# =============================================================================================
# (c) the original paper's directories (eo4ai format)

_PAPER_FILES = ("image.npy", "mask.npy", "descriptors.npy", "metadata.json")


def _is_paper_dir(path: Path) -> bool:
    return all((path / f).is_file() for f in _PAPER_FILES)


def read_paper_dir(
    directory: str | os.PathLike[str],
    *,
    class_map: Mapping[str, str | int] | None = None,
    tags: Sequence[str] = (),
) -> Patch:
    """One patch directory: ``image.npy`` (H, W, C), one-hot ``mask.npy`` (H, W, K) with the
    class names in ``metadata['classes']``, ``descriptors.npy`` (C, 3) nm, ``metadata.json``.

    Pixels with no class set, or a FILL-like class, become 255. Directories written by
    :func:`write_paper_dir` keep their xsensei metadata exactly.
    """
    d = Path(directory)
    image = np.load(d / "image.npy")
    mask = np.load(d / "mask.npy")
    desc = np.load(d / "descriptors.npy")
    raw = json.loads((d / "metadata.json").read_text(encoding="utf-8"))
    if image.ndim != 3 or mask.ndim != 3 or mask.shape[:2] != image.shape[:2]:
        raise ValueError(f"{d}: expected image (H, W, C) and mask (H, W, K), got "
                         f"{image.shape} and {mask.shape}")
    classes = raw.get("classes")
    if not isinstance(classes, list) or len(classes) != mask.shape[-1]:
        raise ValueError(f"{d}: metadata 'classes' must name the {mask.shape[-1]} mask channels")
    names = {str(k): v for k, v in (class_map or {}).items()}
    values = [class_value(names.get(str(c), c)) for c in classes]
    hot = mask.astype(bool)
    label = np.full(mask.shape[:2], NODATA_LABEL, dtype=np.uint8)
    any_hot = hot.any(-1)
    label[any_hot] = np.asarray(values, dtype=np.uint8)[np.argmax(hot, axis=-1)[any_hot]]
    if "xsensei" in raw:
        meta = dict(raw["xsensei"])
    else:
        extra = {k: v for k, v in raw.items() if k not in (
            "spacecraft_id", "scene_id", "bands", "band_types", "band_centres", "band_widths",
            "classes", "named_bands", "resolution", "sensor", "tags")}
        meta = make_metadata(
            sensor=raw.get("sensor") or raw.get("spacecraft_id"),
            scene_id=raw.get("scene_id"),
            resolution_m=raw.get("resolution"),
            tags=[*raw.get("tags", []), *tags],
            label_scheme=_scheme_of(values),
            band_names=raw.get("bands"),
            source="paper-dir",
            **extra,
        )
    chw = np.ascontiguousarray(np.moveaxis(image.astype(np.float32, copy=False), -1, 0))
    return Patch(chw, label, desc.astype(np.float64), meta)


def patches_from_paper_dirs(
    root: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    class_map: Mapping[str, str | int] | None = None,
    tags: Sequence[str] = (),
) -> Iterator[Patch]:
    """Every patch directory under ``root`` (recursive, sorted by path for reproducibility)."""
    roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
    dirs: list[Path] = []
    for r in roots:
        r = Path(r)
        dirs += [r] if _is_paper_dir(r) else sorted(
            p.parent for p in r.rglob("metadata.json") if _is_paper_dir(p.parent)
        )
    for d in dirs:
        yield read_paper_dir(d, class_map=class_map, tags=tags)


def write_paper_dir(patch: Patch, directory: str | os.PathLike[str]) -> Path:
    """Write one patch in the paper's format (readable by the original SEnSeI loader).

    The mask has one channel per class of the patch's ``label_scheme``; unlabelled pixels are
    all-zero. The full xsensei metadata is kept under ``metadata['xsensei']``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    scheme = patch.metadata.get("label_scheme") or SCHEME_FULL
    classes = scheme.split(",")
    values = np.array([LABEL_VALUES[c] for c in classes], dtype=np.uint8)
    present = set(np.unique(patch.label).tolist()) - {NODATA_LABEL}
    missing = present - set(values.tolist())
    if missing:
        raise ValueError(f"label values {sorted(missing)} are outside the scheme {scheme!r}")
    onehot = patch.label[..., None] == values[None, None, :]
    np.save(d / "image.npy", np.moveaxis(patch.image, 0, -1).astype(np.float32))
    np.save(d / "mask.npy", onehot)
    np.save(d / "descriptors.npy", patch.descriptors.astype(np.float64))
    desc = patch.descriptors
    names = patch.metadata.get("band_names") or [f"band{i + 1}" for i in range(len(desc))]
    raw = {
        "spacecraft_id": patch.metadata.get("sensor"),
        "scene_id": patch.metadata.get("scene_id"),
        "bands": list(names),
        "band_types": ["TOA Normalised Brightness Temperature" if c > THERMAL_CENTRE_NM else
                       "TOA Reflectance" for c in desc[:, 1]],
        "band_centres": desc[:, 1].tolist(),
        "band_widths": (desc[:, 2] - desc[:, 0]).tolist(),
        "classes": classes,
        "named_bands": {},
        "resolution": patch.metadata.get("resolution_m"),
        "xsensei": patch.metadata,
    }
    (d / "metadata.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    return d


def export_paper_dirs(
    patches: Iterable[Patch] | PatchStore, root: str | os.PathLike[str], *,
    overwrite: bool = False,
) -> list[Path]:
    """Write every patch to ``root/patch_000000`` ... in the paper's format.

    A ``root`` that already holds ``patch_*`` folders is refused (a smaller export over a
    larger one would read back with stale patches); ``overwrite=True`` removes them first.
    """
    root = Path(root)
    old = sorted(root.glob("patch_*")) if root.is_dir() else []
    if old and not overwrite:
        raise FileExistsError(
            f"{root} already holds {len(old)} patch_* folder(s); pass overwrite=True to "
            "replace them, or export to a new folder"
        )
    for folder in old:
        if folder.is_dir():
            shutil.rmtree(folder)
        else:
            folder.unlink()
    return [write_paper_dir(p, root / f"patch_{i:06d}") for i, p in enumerate(patches)]
