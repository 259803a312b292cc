"""Paper metrics against hand-computed examples; streaming equals one-shot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from xsensei.training.metrics import (
    BinaryCounts,
    ConfusionMatrix,
    TaggedConfusion,
    boundary_band,
    boundary_scores,
    cloud_scores,
    json_safe,
    scores_from_counts,
)

# truth: clear, clear, thick, thick, thin, shadow, generic cloud, unlabelled
TRUTH = np.array([0, 0, 1, 1, 2, 3, 4, 255], dtype=np.uint8)
PRED = np.array([0, 1, 1, 0, 1, 2, 4, 1], dtype=np.uint8)
# cloud truth at 2, 3, 4, 6; predicted cloud at 1, 2, 4, 5, 6; position 7 is ignored
# tp = 3 (2, 4, 6), fn = 1 (3), fp = 2 (1, 5), tn = 1 (0)
HAND = {
    "OA": 100 * 4 / 7,
    "BA": (100 * 3 / 4 + 100 * 1 / 3) / 2,
    "precision": 60.0,
    "recall": 75.0,
    "F1": 100 * 2 * 0.6 * 0.75 / (0.6 + 0.75),
    "n": 7,
}


def test_hand_computed_cloud_scores() -> None:
    cm = ConfusionMatrix().update(TRUTH, PRED)
    assert cm.binary() == BinaryCounts(tp=3, fp=2, fn=1, tn=1)
    scores = cm.scores()
    for key, value in HAND.items():
        assert scores[key] == pytest.approx(value, abs=1e-12), key
    assert scores["unscored"] == 0


def test_streaming_equals_one_shot_in_any_split() -> None:
    rng = np.random.default_rng(3)
    truth = rng.choice([0, 1, 2, 3, 4, 255], size=(6, 32, 32)).astype(np.uint8)
    pred = rng.choice([0, 1, 2, 3], size=(6, 32, 32)).astype(np.uint8)
    whole = ConfusionMatrix().update(truth, pred)
    by_batch = ConfusionMatrix()
    for t, p in zip(truth, pred, strict=True):
        by_batch.update(t, p)
    halves = ConfusionMatrix().update(truth[:2], pred[:2]) + ConfusionMatrix().update(
        truth[2:], torch.from_numpy(pred[2:]))
    for other in (by_batch, halves):
        np.testing.assert_array_equal(other.counts, whole.counts)
        assert other.scores() == whole.scores()


def test_unlabelled_truth_and_nodata_prediction_are_left_out() -> None:
    truth = np.array([0, 1, 255, 0])
    pred = np.array([255, 1, 1, 0])
    scores = cloud_scores(truth, pred)
    assert scores["n"] == 2 and scores["unscored"] == 1
    assert scores["OA"] == 100.0 and scores["F1"] == 100.0


def test_undefined_scores_are_nan() -> None:
    scores = cloud_scores(np.zeros(5, np.uint8), np.zeros(5, np.uint8))
    assert scores["OA"] == 100.0
    assert all(math.isnan(scores[k]) for k in ("BA", "precision", "recall", "F1"))
    s = scores_from_counts(BinaryCounts(tp=0, fp=0, fn=4, tn=1))
    assert s["recall"] == 0.0 and s["F1"] == 0.0 and math.isnan(s["precision"])
    json.dumps(json_safe(scores), allow_nan=False)


def test_per_class_one_vs_rest() -> None:
    cm = ConfusionMatrix().update(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    pc = cm.per_class()
    assert set(pc) == {"clear", "thick_cloud"}
    assert pc["clear"]["precision"] == 100.0 and pc["clear"]["recall"] == 50.0
    assert pc["clear"]["F1"] == pytest.approx(200 / 3) and pc["clear"]["IoU"] == 50.0
    assert pc["thick_cloud"]["precision"] == pytest.approx(200 / 3)
    assert pc["thick_cloud"]["F1"] == pytest.approx(80.0) and pc["thick_cloud"]["support"] == 2
    # a cloud-only truth is scored against thick + thin predictions merged into "cloud"
    merged = ConfusionMatrix().update(np.array([0, 4, 4, 3]), np.array([0, 1, 2, 0])).per_class()
    assert set(merged) == {"clear", "cloud", "cloud_shadow"}
    assert merged["cloud"]["F1"] == 100.0 and merged["cloud_shadow"]["recall"] == 0.0


def test_per_tag_pools_pixels_of_tagged_patches() -> None:
    acc = TaggedConfusion()
    a_t, a_p = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])  # tp 1, fn 1, tn 2
    b_t, b_p = np.array([0, 0, 1]), np.array([1, 1, 1])  # fp 2, tp 1
    acc.update(a_t, a_p, tags=["forest", "winter"])
    acc.update(b_t, b_p, tags=["winter", "winter"])
    res = acc.results()
    assert set(res["tags"]) == {"forest", "winter"}
    assert res["tags"]["forest"]["recall"] == 50.0 and res["tags"]["forest"]["n"] == 4
    winter = res["tags"]["winter"]  # tp 2, fn 1, fp 2, tn 2
    assert winter["n"] == 7 and winter["precision"] == 50.0
    assert winter["recall"] == pytest.approx(200 / 3)
    assert res["all"] == winter  # every patch is tagged winter


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        ConfusionMatrix().update(np.zeros(3, np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="integers 0-255"):
        ConfusionMatrix().update(np.zeros(3, np.float32), np.zeros(3))


def _square_scene() -> np.ndarray:
    """20 x 20 clear scene (0) with a 6 x 6 labelled cloud (4) and an unlabelled corner."""
    truth = np.zeros((20, 20), dtype=np.uint8)
    truth[5:11, 5:11] = 4
    truth[:2, 18:] = 255
    return truth


def test_boundary_band_hugs_the_labelled_cloud_edge() -> None:
    truth = _square_scene()
    band = boundary_band(truth, radius=1)
    # within 1 px (square) of both cloud and labelled clear: the 8 x 8 ring minus the 4 x 4 core
    expect = np.zeros_like(band)
    expect[4:12, 4:12] = True
    expect[6:10, 6:10] = False
    np.testing.assert_array_equal(band, expect)
    assert not boundary_band(truth, radius=0).any()
    assert not boundary_band(np.zeros((5, 5), np.uint8)).any()  # no cloud, no edge
    with pytest.raises(ValueError, match="2-D"):
        boundary_band(truth[None])


def test_boundary_scores_tell_edge_errors_from_missed_clouds() -> None:
    truth = _square_scene()
    shifted = np.zeros_like(truth)
    shifted[6:12, 6:12] = 1  # the same cloud drawn 1 px down and right
    edge = boundary_scores(truth, shifted, radius=2)
    assert edge["errors_in_band"] == 100.0 and edge["F1_outside_band"] == 100.0
    assert edge["F1_in_band"] < 100.0
    n_band = int(boundary_band(truth, radius=2).sum())
    assert edge["boundary_share"] == pytest.approx(100 * n_band / int((truth != 255).sum()))
    # a 7 x 7 thin cloud elsewhere, missed: its 3 x 3 core lies > 2 px from any clear pixel
    truth2 = truth.copy()
    truth2[12:19, 12:19] = 2
    far = boundary_scores(truth2, shifted, radius=2)
    cloud2, cloud_pred = np.isin(truth2, [1, 2, 4]), np.isin(shifted, [1, 2, 4])
    wrong = int(((truth2 != 255) & (cloud2 != cloud_pred)).sum())
    assert wrong == 6 + 6 + 6 + 6 + 49 - 2  # the shifted square's L-shaped edges, + the miss
    assert far["errors_in_band"] == pytest.approx(100 * (wrong - 9) / wrong)
    assert far["F1_outside_band"] < 100.0
    # unlabelled truth and no-data predictions are not scored
    nodata = shifted.copy()
    nodata[5, 5] = 255
    assert boundary_scores(truth, nodata, radius=2)["errors_in_band"] == 100.0
    with pytest.raises(ValueError, match="differ in shape"):
        boundary_scores(truth, shifted[:-1])
