"""Score a model (or the brightness-threshold baseline) on labelled data, as the paper does.

Sources: the real labelled ``.npz`` scenes (``shared/data/real``), patch stores, STAC catalogs
with raster label assets, and folders of paper-format patches. Scenes run through the product
path, ``da.sensei.cloudmask(...)`` with default arguments, so what is scored is what users get;
patches (already in model units) run through the same function's numpy path. Scores are
cloud vs rest over labelled pixels (see :mod:`xsensei.training.metrics`).

``xsensei evaluate SOURCE [SOURCE...] --model M [--bands red,green,blue] [--json out.json]``
is registered by :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from xsensei.training.metrics import (
    BoundaryConfusion,
    ConfusionMatrix,
    TaggedConfusion,
    boundary_scores,
    json_safe,
)
from xsensei.training.patches import (
    NODATA_LABEL,
    LabelMap,
    Patch,
    PatchStore,
    patches_from_paper_dirs,
)

__all__ = [
    "BrightnessThreshold",
    "add_parser",
    "evaluate_npz",
    "evaluate_patches",
    "evaluate_source",
    "evaluate_stac",
    "evaluate_store",
    "format_table",
    "select_bands",
]

#: Model names that select :class:`BrightnessThreshold` (``threshold:0.3`` sets the threshold).
BASELINE_NAMES = ("threshold", "brightness-threshold")

#: The npz files' masks (0 clear, 1 cloud, 2 shadow, 255 unlabelled) in store label values.
NPZ_LABELS = LabelMap({0: "clear", 1: "cloud", 2: "cloud_shadow", 255: "nodata"})

#: Common band names -> (lowest, highest, nominal) centre wavelength in nm.
COMMON_BANDS: dict[str, tuple[float, float, float]] = {
    "coastal": (400, 455, 443),
    "blue": (450, 530, 490),
    "green": (530, 600, 560),
    "red": (620, 700, 665),
    "rededge1": (695, 715, 705),
    "rededge2": (730, 750, 740),
    "rededge3": (770, 795, 783),
    "nir": (760, 900, 842),
    "nir08": (840, 880, 865),
    "nir09": (930, 960, 945),
    "cirrus": (1355, 1395, 1375),
    "swir16": (1550, 1700, 1610),
    "swir22": (2050, 2350, 2200),
    "lwir11": (10300, 11300, 10900),
    "lwir12": (11500, 12600, 12000),
}
_COMMON_ALIASES = {"swir1": "swir16", "swir2": "swir22", "tir": "lwir11", "lwir": "lwir11"}

ModelLike = Any  # str | PathLike | CloudMaskModel | BrightnessThreshold


@dataclass(frozen=True)
class BrightnessThreshold:
    """Model-free baseline: mean reflectance of the visible bands (centre 400-700 nm) above
    ``threshold`` is cloud. The reference figures in ``shared/data/README.md`` use 0.25."""

    threshold: float = 0.25
    visible_nm: tuple[float, float] = (400.0, 700.0)

    @property
    def name(self) -> str:
        return f"brightness-threshold:{self.threshold:g}"

    def _visible(self, wavelengths_nm: NDArray[np.float64]) -> NDArray[np.bool_]:
        centre = np.asarray(wavelengths_nm, dtype=np.float64)[:, 1]
        vis = (centre >= self.visible_nm[0]) & (centre <= self.visible_nm[1])
        if not vis.any():
            raise ValueError(
                f"the brightness threshold needs a visible band ({self.visible_nm[0]:g}-"
                f"{self.visible_nm[1]:g} nm); band centres are {centre.tolist()}"
            )
        return vis

    def mask(self, values: NDArray[Any], wavelengths_nm: NDArray[np.float64]) -> NDArray[np.uint8]:
        """``(H, W)`` uint8: 1 cloud, 0 clear, 255 where no visible band has data."""
        vis = np.asarray(values, dtype=np.float32)[self._visible(wavelengths_nm)]
        finite = np.isfinite(vis)
        count = finite.sum(0)
        mean = np.where(finite, vis, 0).sum(0) / np.maximum(count, 1)
        out = (mean > self.threshold).astype(np.uint8)
        out[count == 0] = NODATA_LABEL
        return out

    def mask_dataarray(self, da: xr.DataArray, wavelengths_nm: NDArray[np.float64]
                       ) -> xr.DataArray:
        """Lazy twin of :meth:`mask` for a ``(band, y, x)`` DataArray."""
        vis = da.isel(band=np.flatnonzero(self._visible(wavelengths_nm)))
        mean = vis.mean("band", skipna=True)
        out = xr.where(mean > self.threshold, np.uint8(1), np.uint8(0))
        return xr.where(mean.notnull(), out, np.uint8(NODATA_LABEL)).astype(np.uint8)


def _as_baseline(model: ModelLike) -> BrightnessThreshold | None:
    if isinstance(model, BrightnessThreshold):
        return model
    if isinstance(model, str):
        name, _, value = model.partition(":")
        if name in BASELINE_NAMES:
            return BrightnessThreshold(float(value)) if value else BrightnessThreshold()
    return None


def _model_name(model: ModelLike) -> str:
    """A checkpoint's recorded name (path or packaged name), else a readable label."""
    base = _as_baseline(model)
    if base is not None:
        return base.name
    meta = getattr(model, "checkpoint_metadata", None)
    if isinstance(meta, Mapping) and meta.get("name"):
        return str(meta["name"])
    if isinstance(model, (str, os.PathLike)):
        try:
            from xsensei.weights.checkpoint import read_metadata, resolve_model_path

            return str(read_metadata(resolve_model_path(model))["name"])
        except Exception:
            return str(model)
    return type(model).__name__


def _model_trained(model: ModelLike) -> bool | None:
    """Whether a checkpoint says it holds trained weights (None: unknown / baseline)."""
    meta = getattr(model, "checkpoint_metadata", None)
    if meta is None and isinstance(model, (str, os.PathLike)) and _as_baseline(model) is None:
        try:
            from xsensei.weights.checkpoint import read_metadata, resolve_model_path

            meta = read_metadata(resolve_model_path(model))
        except Exception:
            meta = None
    return None if not isinstance(meta, Mapping) else bool(meta.get("trained", False))


def select_bands(
    names: Sequence[str], wavelengths_nm: NDArray[np.float64], bands: Sequence[str] | str | None
) -> list[int]:
    """Positions of the requested bands, in request order.

    A request matches a band name (case-insensitive; ``B04`` also matches ``S2_B04``) or a
    common name (``red``, ``nir``, ``swir16``, ...) by centre wavelength: the band nearest the
    nominal centre within the common band's range.
    """
    if bands is None:
        return list(range(len(names)))
    if isinstance(bands, str):
        bands = [b.strip() for b in bands.split(",") if b.strip()]
    lower = [n.lower() for n in names]
    centres = np.asarray(wavelengths_nm, dtype=np.float64)[:, 1]
    out: list[int] = []
    for req in bands:
        key = req.lower()
        hits = [i for i, n in enumerate(lower) if n == key or n.split("_")[-1] == key]
        if not hits:
            common = COMMON_BANDS.get(_COMMON_ALIASES.get(key, key))
            if common is not None:
                lo, hi, nominal = common
                inside = [i for i, c in enumerate(centres) if lo <= c <= hi]
                hits = sorted(inside, key=lambda i: abs(centres[i] - nominal))[:1]
        if not hits:
            raise ValueError(
                f"no band {req!r}: bands are {list(names)} (centres {centres.round(1).tolist()}"
                f" nm); use a band name or a common name ({', '.join(COMMON_BANDS)})"
            )
        if hits[0] in out:
            raise ValueError(f"band {req!r} selects {names[hits[0]]!r} twice")
        out.append(hits[0])
    return out


def _check_kwargs(kwargs: Mapping[str, Any]) -> None:
    if kwargs.get("output", "mask") not in ("mask", "binary"):
        raise ValueError("evaluation needs output='mask' or 'binary', not probabilities")


def _result(source: str, kind: str, model: ModelLike, cm: ConfusionMatrix,
            **extra: Any) -> dict[str, Any]:
    return {"source": source, "kind": kind, "model": _model_name(model), **cm.scores(),
            "per_class": cm.per_class(), **extra}


# =============================================================================================
# npz scenes


def evaluate_npz(
    path: str | os.PathLike[str],
    model: ModelLike = "default",
    bands: Sequence[str] | str | None = None,
    **cloudmask_kwargs: Any,
) -> dict[str, Any]:
    """Score ``model`` on one labelled ``.npz`` scene (keys in ``shared/data/README.md``).

    The scene becomes a ``(band, y, x)`` DataArray whose descriptors are the file's
    [wl_min, wl_center, wl_max] nm, masked with ``da.sensei.cloudmask(descriptors, model=...,
    **cloudmask_kwargs)``; ``bands`` keeps a subset (names or common names, e.g.
    ``["red", "green", "blue"]``). ``model="threshold"`` scores the brightness baseline instead.
    Returns the scores (percent), ``n`` labelled pixels, ``per_class``, ``boundary``
    (:func:`~xsensei.training.metrics.boundary_scores`: how much of the error lies within 3 px
    of the labelled cloud edges) and provenance.
    """
    _check_kwargs(cloudmask_kwargs)
    path = Path(path)
    with np.load(path) as z:
        names = [str(n) for n in z["band_names"]]
        wl = np.stack([z["wl_min_nm"], z["wl_center_nm"], z["wl_max_nm"]], axis=-1)
        wl = wl.astype(np.float64)
        sel = select_bands(names, wl, bands)
        values = np.asarray(z["bands"][sel], dtype=np.float32)
        truth = NPZ_LABELS(z["mask"])
        sensor = str(z["sensor"]) if "sensor" in z.files else None
        label_type = str(z["label_type"]) if "label_type" in z.files else None
    da = xr.DataArray(
        values,
        dims=("band", "y", "x"),
        coords={
            "band": [names[i] for i in sel],
            "wl_min_nm": ("band", wl[sel, 0]),
            "wl_center_nm": ("band", wl[sel, 1]),
            "wl_max_nm": ("band", wl[sel, 2]),
        },
        name="reflectance",
    )
    baseline = _as_baseline(model)
    if baseline is not None:
        pred = baseline.mask_dataarray(da, wl[sel]).values
    else:
        pred = np.asarray(da.sensei.cloudmask(wl[sel], model=model, **cloudmask_kwargs).values)
    cm = ConfusionMatrix().update(truth, pred)
    return _result(str(path), "npz", model, cm, bands=[names[i] for i in sel], sensor=sensor,
                   label_type=label_type, boundary=boundary_scores(truth, pred))


# =============================================================================================
# patches: stores and paper directories


def _predict_patch(patch: Patch, sel: list[int], model: ModelLike,
                   kwargs: Mapping[str, Any]) -> NDArray[np.uint8]:
    image = patch.image[sel]
    wl = patch.descriptors[sel]
    baseline = _as_baseline(model)
    if baseline is not None:
        return baseline.mask(image, wl)
    from xsensei.api import cloudmask

    return np.asarray(cloudmask(image, wl, model=model, **kwargs))


def evaluate_patches(
    patches: Iterable[Patch],
    model: ModelLike = "default",
    bands: Sequence[str] | str | None = None,
    *,
    source: str = "patches",
    per_patch: bool = False,
    **cloudmask_kwargs: Any,
) -> dict[str, Any]:
    """Score every patch (values already in model units, so :func:`xsensei.cloudmask`'s numpy
    path with the patch's descriptors), pooled over all pixels and per tag, plus the pooled
    ``boundary`` split (:class:`~xsensei.training.metrics.BoundaryConfusion`).

    ``per_patch=True`` adds each patch's scores under ``"patches"``.
    """
    _check_kwargs(cloudmask_kwargs)
    acc = TaggedConfusion()
    edges = BoundaryConfusion()
    rows: list[dict[str, Any]] = []
    count = 0
    for i, patch in enumerate(patches):
        names = patch.metadata.get("band_names") or [
            f"band{j + 1}" for j in range(patch.image.shape[0])
        ]
        sel = select_bands(names, patch.descriptors, bands)
        pred = _predict_patch(patch, sel, model, cloudmask_kwargs)
        acc.update(patch.label, pred, patch.tags)
        edges.update(patch.label, pred)
        count += 1
        if per_patch:
            scores = ConfusionMatrix().update(patch.label, pred).scores()
            rows.append({"patch": i, "scene_id": patch.metadata.get("scene_id"),
                         "tags": patch.tags, **scores})
    res = acc.results()
    out = {"source": source, "kind": "patches", "model": _model_name(model), **res["all"],
           "per_class": res["per_class"], "tags": res["tags"], "n_patches": count,
           "boundary": edges.results()}
    if per_patch:
        out["patches"] = rows
    return out


def evaluate_store(
    path: str | os.PathLike[str],
    model: ModelLike = "default",
    bands: Sequence[str] | str | None = None,
    *,
    tag: str | None = None,
    per_patch: bool = False,
    **cloudmask_kwargs: Any,
) -> dict[str, Any]:
    """:func:`evaluate_patches` over a patch store (only patches with ``tag`` if given)."""
    store = PatchStore(path)
    patches = (store[i] for i in store.indices(tag))
    out = evaluate_patches(patches, model, bands, source=str(path), per_patch=per_patch,
                           **cloudmask_kwargs)
    out["kind"] = "store"
    return out


# =============================================================================================
# STAC


def evaluate_stac(
    source: Any,
    model: ModelLike = "default",
    bands: Sequence[str] | str | None = None,
    *,
    label_asset: str | None = None,
    class_map: Mapping[Any, str | int] | None = None,
    tags: Sequence[str] | Callable[[Any], Sequence[str]] = (),
    **cloudmask_kwargs: Any,
) -> dict[str, Any]:
    """Score whole labelled STAC scenes through ``da.sensei.cloudmask`` on the raw assets (the
    product path: wavelengths from ``eo:bands`` / ``bands``, scale from ``raster:bands``,
    thermal units converted), pooled over items and per tag (``tags`` fixed or per item)."""
    from xsensei.training.patches import _is_label_item, _stac_items, stac_item_arrays

    _check_kwargs(cloudmask_kwargs)
    items = _stac_items(source)
    if any(_is_label_item(i) for i in items):
        items = [i for i in items if _is_label_item(i)]
    acc = TaggedConfusion()
    edges = BoundaryConfusion()
    scenes = []
    for item in items:
        image, label, lmap = stac_item_arrays(item, label_asset=label_asset, class_map=class_map)
        if label is None or lmap is None:
            continue
        truth = lmap(label.values)
        names = [str(b) for b in image.coords["band"].values]
        if bands is not None or _as_baseline(model) is not None:
            from xsensei.band_metadata import resolve_bands

            resolved = resolve_bands(image)
            keep = [names[i] for i in resolved.indices]
            sel = select_bands(keep, resolved.wavelengths_nm, bands)
            image = image.sel(band=[keep[i] for i in sel])
            wl = resolved.wavelengths_nm[sel]
        baseline = _as_baseline(model)
        if baseline is not None:
            pred = baseline.mask(image.values, wl)
        else:
            pred = np.asarray(image.sensei.cloudmask(model=model, **cloudmask_kwargs).values)
        item_tags = list(tags(item) if callable(tags) else tags)
        acc.update(truth, pred, item_tags)
        edges.update(truth, pred)
        scenes.append(item.id)
    res = acc.results()
    return {"source": str(source) if isinstance(source, (str, os.PathLike)) else "stac",
            "kind": "stac", "model": _model_name(model), **res["all"],
            "per_class": res["per_class"], "tags": res["tags"], "items": scenes,
            "boundary": edges.results()}


# =============================================================================================
# dispatch and command line


def _kind(source: str) -> str:
    path = Path(source)
    if path.suffix.lower() == ".npz":
        return "npz"
    if path.is_dir() and (path / "zarr.json").is_file():
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        if attrs.get("format") == "xsensei-patches":
            return "store"
    if path.suffix.lower() == ".json" or (path.is_dir() and (path / "catalog.json").is_file()):
        return "stac"
    if path.is_dir() and any(path.rglob("image.npy")):
        return "paper"
    raise ValueError(
        f"cannot tell what {source!r} is: expected a .npz scene, a patch store, a STAC "
        "catalog / collection / item JSON, or a folder of paper-format patches"
    )


def evaluate_source(
    source: str | os.PathLike[str],
    model: ModelLike = "default",
    bands: Sequence[str] | str | None = None,
    **cloudmask_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate one source of any supported kind (decided from the path)."""
    src = str(source)
    kind = _kind(src)
    if kind == "npz":
        return evaluate_npz(src, model, bands, **cloudmask_kwargs)
    if kind == "store":
        return evaluate_store(src, model, bands, **cloudmask_kwargs)
    if kind == "stac":
        stac = Path(src) / "catalog.json" if Path(src).is_dir() else Path(src)
        return evaluate_stac(str(stac), model, bands, **cloudmask_kwargs)
    out = evaluate_patches(patches_from_paper_dirs(src), model, bands, source=src,
                           **cloudmask_kwargs)
    out["kind"] = "paper"
    return out


def _fmt(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else (
        f"{value:.1f}"
    )


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A plain text table: one row per source, indented rows per tag."""
    cols = ("OA", "BA", "precision", "recall", "F1")
    rows = []
    for r in results:
        rows.append((Path(str(r["source"])).name, r))
        for tag, scores in (r.get("tags") or {}).items():
            rows.append((f"  tag {tag}", scores))
    width = max([len("source"), *(len(name) for name, _ in rows)])
    head = f"{'source':<{width}}  {'pixels':>9}" + "".join(
        f"  {c if c in ('OA', 'BA', 'F1') else c[0].upper():>5}" for c in cols
    )
    lines = [head, "-" * len(head)]
    for name, s in rows:
        lines.append(f"{name:<{width}}  {s.get('n', 0):>9}" + "".join(
            f"  {_fmt(s.get(c)):>5}" for c in cols
        ))
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``xsensei evaluate``: score each source, print a table, optionally write JSON."""
    kwargs: dict[str, Any] = {}
    if args.device != "auto":
        kwargs["device"] = args.device
    if args.json_path:  # before the (long) evaluation, not after it
        target = Path(args.json_path)
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
        if not target.parent.is_dir():
            raise FileExistsError(f"{target.parent} does not exist; create it first")
    results = [evaluate_source(s, args.model, args.bands, **kwargs) for s in args.sources]
    print(f"model: {results[0]['model']}" if results else "no sources")
    if _model_trained(args.model) is False:
        print("NOTE: this checkpoint is marked untrained; its scores say nothing about cloud "
              "masking quality", file=sys.stderr)
    print(format_table(results))
    for r in results:
        if r.get("unscored"):
            print(f"{Path(str(r['source'])).name}: {r['unscored']} labelled pixels not scored "
                  "(the model's output is nodata there)")
        b = r.get("boundary")
        if b and b["errors_in_band"] == b["errors_in_band"]:  # NaN when there is no error
            print(f"{Path(str(r['source'])).name}: {_fmt(b['errors_in_band'])} % of the errors "
                  f"lie within {b['radius_px']} px of the labelled cloud edges "
                  f"({_fmt(b['boundary_share'])} % of the pixels); F1 away from them "
                  f"{_fmt(b['F1_outside_band'])}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(json_safe(results), indent=1) + "\n",
                                        encoding="utf-8")
        print(f"wrote {args.json_path}", file=sys.stderr)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``xsensei evaluate``."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a model on labelled data: OA, BA, precision, recall, F1 (cloud vs rest)",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help=".npz scene, patch store, STAC catalog/collection/item JSON, or a "
                        "folder of paper-format patches")
    p.add_argument("--model", required=True,
                   help="checkpoint path or packaged name; 'threshold' (or 'threshold:0.3') for "
                        "the mean-visible-reflectance baseline")
    p.add_argument("--bands", default=None,
                   help="keep only these bands: names or common names, e.g. red,green,blue")
    p.add_argument("--json", dest="json_path", default=None, help="also write results as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)
