"""Cloud-mask metrics as in the SEnSeI paper, from a streaming confusion matrix.

Everything derives from one ``256 x 256`` count matrix over (truth value, predicted value), so
batches, scenes and patches can be added in any order and merged across workers; the numbers
never depend on how the data were split. Truth 255 (unlabelled) is ignored, as in the paper;
prediction 255 (no data: the model could not run there) is left out too and counted as
``unscored``, so it never silently becomes "clear".

Cloud vs rest: truth and prediction values in :data:`CLOUD_VALUES` (thick 1, thin 2, generic
cloud 4) are cloud; everything else (clear 0, shadow 3) is not. Scores are percentages: overall
accuracy (OA), balanced accuracy (BA = mean of recall and specificity), precision, recall, F1.
A score whose denominator is zero is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsensei.training.patches import CLOUD_LABELS, LABEL_NAMES, LABEL_VALUES, NODATA_LABEL

__all__ = [
    "CLOUD_VALUES",
    "BinaryCounts",
    "BoundaryConfusion",
    "ConfusionMatrix",
    "TaggedConfusion",
    "boundary_band",
    "boundary_scores",
    "cloud_scores",
    "json_safe",
    "scores_from_counts",
]

CLOUD_VALUES: tuple[int, ...] = CLOUD_LABELS
_N = 256


def _as_uint8(values: Any) -> NDArray[np.uint8]:
    if hasattr(values, "detach"):  # torch tensors
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise ValueError(f"label/mask values must be integers 0-255, got {arr.dtype}")
        arr = arr.astype(np.uint8)
    return arr


@dataclass(frozen=True)
class BinaryCounts:
    """Cloud-vs-rest pixel counts."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def _pct(num: float, den: float) -> float:
    return 100.0 * num / den if den else math.nan


def scores_from_counts(counts: BinaryCounts) -> dict[str, float]:
    """OA, BA, precision, recall, F1 (percent) and the pixel count ``n``."""
    tp, fp, fn, tn = counts.tp, counts.fp, counts.fn, counts.tn
    recall = _pct(tp, tp + fn)
    specificity = _pct(tn, tn + fp)
    precision = _pct(tp, tp + fp)
    f1 = _pct(2 * tp, 2 * tp + fp + fn) if tp + fp + fn else math.nan
    if math.isnan(recall) or math.isnan(specificity):
        ba = math.nan
    else:
        ba = (recall + specificity) / 2
    return {
        "OA": _pct(tp + tn, counts.n),
        "BA": ba,
        "precision": precision,
        "recall": recall,
        "F1": f1,
        "n": counts.n,
    }


class ConfusionMatrix:
    """Streaming ``counts[truth, prediction]`` over label values 0-255."""

    def __init__(self) -> None:
        self.counts = np.zeros((_N, _N), dtype=np.int64)

    def update(self, truth: ArrayLike, pred: ArrayLike) -> ConfusionMatrix:
        """Add one batch / scene / patch (same shapes; numpy or torch; values 0-255)."""
        t = _as_uint8(truth)
        p = _as_uint8(pred)
        if t.shape != p.shape:
            raise ValueError(f"truth {t.shape} and prediction {p.shape} differ in shape")
        flat = t.reshape(-1).astype(np.int64) * _N + p.reshape(-1)
        self.counts += np.bincount(flat, minlength=_N * _N).reshape(_N, _N)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.counts += other.counts
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        out = ConfusionMatrix()
        out.counts = self.counts + other.counts
        return out

    def _scored(self) -> NDArray[np.int64]:
        """Counts with unlabelled truth and no-data predictions removed."""
        c = self.counts.copy()
        c[NODATA_LABEL, :] = 0
        c[:, NODATA_LABEL] = 0
        return c

    @property
    def unscored(self) -> int:
        """Labelled pixels the prediction left as no data (excluded from every score)."""
        return int(self.counts[:NODATA_LABEL, NODATA_LABEL].sum())

    def binary(self, cloud_values: Sequence[int] = CLOUD_VALUES) -> BinaryCounts:
        c = self._scored()
        cloud = np.zeros(_N, dtype=bool)
        cloud[list(cloud_values)] = True
        return BinaryCounts(
            tp=int(c[np.ix_(cloud, cloud)].sum()),
            fp=int(c[np.ix_(~cloud, cloud)].sum()),
            fn=int(c[np.ix_(cloud, ~cloud)].sum()),
            tn=int(c[np.ix_(~cloud, ~cloud)].sum()),
        )

    def scores(self, cloud_values: Sequence[int] = CLOUD_VALUES) -> dict[str, float]:
        """Cloud-vs-rest OA, BA, precision, recall, F1 in percent, ``n`` and ``unscored``."""
        out = scores_from_counts(self.binary(cloud_values))
        out["unscored"] = self.unscored
        return out

    def per_class(self, merge_cloud: bool | None = None) -> dict[str, dict[str, float]]:
        """One-vs-rest precision, recall, F1 and IoU (percent) per value in truth or
        prediction, keyed by class name (or the value for unknown values).

        ``merge_cloud`` folds thick, thin and generic cloud into ``"cloud"``; by default it
        does so when the truth has no thick / thin labels (a cloud-only source, where a model's
        thick-vs-thin split cannot be scored).
        """
        c = self._scored()
        if merge_cloud is None:
            merge_cloud = c[1].sum() + c[2].sum() == 0
        if merge_cloud:
            cloud = LABEL_VALUES["cloud"]
            for v in (LABEL_VALUES["thick_cloud"], LABEL_VALUES["thin_cloud"]):
                c[cloud, :] += c[v, :]
                c[v, :] = 0
                c[:, cloud] += c[:, v]
                c[:, v] = 0
        present = np.flatnonzero(c.sum(0) + c.sum(1))
        total = c.sum()
        out: dict[str, dict[str, float]] = {}
        for v in present:
            tp = int(c[v, v])
            fp = int(c[:, v].sum()) - tp
            fn = int(c[v, :].sum()) - tp
            s = scores_from_counts(BinaryCounts(tp, fp, fn, int(total) - tp - fp - fn))
            out[LABEL_NAMES.get(int(v), str(int(v)))] = {
                "precision": s["precision"],
                "recall": s["recall"],
                "F1": s["F1"],
                "IoU": _pct(tp, tp + fp + fn),
                "support": tp + fn,
            }
        return out


class TaggedConfusion:
    """One :class:`ConfusionMatrix` for everything plus one per tag (pixels pooled over the
    patches / scenes carrying the tag)."""

    def __init__(self) -> None:
        self.total = ConfusionMatrix()
        self.tags: dict[str, ConfusionMatrix] = {}

    def update(self, truth: ArrayLike, pred: ArrayLike, tags: Iterable[str] = ()) -> None:
        part = ConfusionMatrix().update(truth, pred)
        self.total.merge(part)
        for tag in dict.fromkeys(tags):
            self.tags.setdefault(str(tag), ConfusionMatrix()).merge(part)

    def merge(self, other: TaggedConfusion) -> TaggedConfusion:
        self.total.merge(other.total)
        for tag, cm in other.tags.items():
            self.tags.setdefault(tag, ConfusionMatrix()).merge(cm)
        return self

    def results(self) -> dict[str, Any]:
        """``{"all": scores, "per_class": ..., "tags": {tag: scores}}``."""
        return {
            "all": self.total.scores(),
            "per_class": self.total.per_class(),
            "tags": {t: cm.scores() for t, cm in sorted(self.tags.items())},
        }


def cloud_scores(
    truth: ArrayLike, pred: ArrayLike, cloud_values: Sequence[int] = CLOUD_VALUES
) -> dict[str, float]:
    """Cloud-vs-rest scores of one label / mask pair (see :class:`ConfusionMatrix`)."""
    return ConfusionMatrix().update(truth, pred).scores(cloud_values)


def _dilate(mask: NDArray[np.bool_], radius: int) -> NDArray[np.bool_]:
    """Binary dilation of a 2-D mask by a ``(2 radius + 1)`` square (separable)."""
    out = mask
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, constant_values=False)
        out = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=axis).any(-1)
    return out


def boundary_band(truth: ArrayLike, radius: int = 3,
                  cloud_values: Sequence[int] = CLOUD_VALUES) -> NDArray[np.bool_]:
    """Labelled pixels within ``radius`` px (square neighbourhood) of both a labelled cloud
    and a labelled non-cloud pixel: where a mask's edge and the labeller's edge can disagree."""
    t = _as_uint8(truth)
    if t.ndim != 2 or radius < 0:
        raise ValueError(f"boundary_band needs a 2-D label array and radius >= 0, got "
                         f"shape {t.shape}, radius {radius}")
    labelled = t != NODATA_LABEL
    cloud = np.isin(t, cloud_values)
    return labelled & _dilate(cloud, radius) & _dilate(labelled & ~cloud, radius)


class BoundaryConfusion:
    """Streaming cloud-edge split of the scores: one confusion matrix for the pixels of the
    :func:`boundary_band` and one for the rest, so scenes and patches pool like
    :class:`ConfusionMatrix` (each 2-D label array gets its own band)."""

    def __init__(self, radius: int = 3, cloud_values: Sequence[int] = CLOUD_VALUES) -> None:
        self.radius = radius
        self.cloud_values = tuple(cloud_values)
        self.inside = ConfusionMatrix()
        self.outside = ConfusionMatrix()

    def update(self, truth: ArrayLike, pred: ArrayLike) -> BoundaryConfusion:
        """Add one 2-D scene or patch (truth and prediction of the same shape)."""
        t = _as_uint8(truth)
        p = _as_uint8(pred)
        if t.shape != p.shape:
            raise ValueError(f"truth {t.shape} and prediction {p.shape} differ in shape")
        band = boundary_band(t, self.radius, self.cloud_values)
        self.inside.update(np.where(band, t, NODATA_LABEL), p)
        self.outside.update(np.where(band, NODATA_LABEL, t), p)
        return self

    def results(self) -> dict[str, float]:
        """See :func:`boundary_scores`."""
        b_in, b_out = self.inside.binary(self.cloud_values), self.outside.binary(self.cloud_values)
        err_in, err_out = b_in.fp + b_in.fn, b_out.fp + b_out.fn
        return {
            "radius_px": self.radius,
            "boundary_share": _pct(b_in.n, b_in.n + b_out.n),
            "errors_in_band": _pct(err_in, err_in + err_out),
            "F1_in_band": scores_from_counts(b_in)["F1"],
            "F1_outside_band": scores_from_counts(b_out)["F1"],
        }


def boundary_scores(truth: ArrayLike, pred: ArrayLike, radius: int = 3,
                    cloud_values: Sequence[int] = CLOUD_VALUES) -> dict[str, float]:
    """How much of the disagreement lies on the labelled cloud edges (one 2-D scene).

    A mask that is right everywhere but draws its edges one or two pixels away from the
    labeller's scores a modest F1 on small clouds; this separates that from missing clouds.
    Returns, over scored pixels: ``radius_px``; ``boundary_share`` (% of pixels in the
    :func:`boundary_band`); ``errors_in_band`` (% of cloud-vs-rest errors there);
    ``F1_in_band`` and ``F1_outside_band`` (cloud F1 within and outside the band).
    """
    return BoundaryConfusion(radius, cloud_values).update(truth, pred).results()


def json_safe(obj: Any) -> Any:
    """NaN -> None, numpy scalars -> Python, recursively (strict JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
