"""Evaluation on real labelled data: numbers checked against masks and metrics computed here.

No trained weights ship yet, so the model is an untrained seeded PixelNet: the tests check
that the scores are computed correctly, not that the model is good. The brightness-threshold
baseline must reproduce the reference figures of ``shared/data/README.md``, which validates
the metrics on real data.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import rioxarray
import torch
import xarray as xr

import xsensei
from xsensei.nn.model import CloudMaskModel
from xsensei.training.evaluate import (
    NPZ_LABELS,
    BrightnessThreshold,
    add_parser,
    evaluate_npz,
    evaluate_source,
    evaluate_stac,
    evaluate_store,
    select_bands,
)
from xsensei.training.metrics import boundary_band, boundary_scores
from xsensei.training.patches import build_store, export_paper_dirs, patches_from_xarray
from xsensei.weights.checkpoint import save_model

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL = SHARED / "data" / "real"
UKIS = REAL / "ukis_sentinel2_512.npz"
CLOUD38 = REAL / "38cloud_l8_patch192_384.npz"
L8_DIR = REAL / "landsat8-rio-cloudmask"
SCENE = "LC80130312015295LGN00"
STAC_BANDS = {"B2": (0.482, 0.060), "B3": (0.561, 0.057), "B4": (0.655, 0.037),
              "B5": (0.865, 0.028)}


def _scores(truth_cloud: np.ndarray, pred_cloud: np.ndarray, valid: np.ndarray) -> dict:
    """The paper's scores straight from their definitions (independent of the metrics module);
    NaN where a denominator is zero."""
    t, p = truth_cloud[valid], pred_cloud[valid]
    tp, fp = int(np.sum(t & p)), int(np.sum(~t & p))
    fn, tn = int(np.sum(t & ~p)), int(np.sum(~t & ~p))
    div = lambda a, b: a / b if b else float("nan")  # noqa: E731
    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    return {
        "OA": 100 * (tp + tn) / t.size,
        "BA": 100 * (recall + div(tn, tn + fp)) / 2,
        "precision": 100 * precision,
        "recall": 100 * recall,
        "F1": 100 * div(2 * tp, 2 * tp + fp + fn),
        "n": int(t.size),
    }


def _check(result: dict, want: dict) -> None:
    for key, value in want.items():
        np.testing.assert_allclose(result[key], value, rtol=1e-9, err_msg=key)


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    with np.load(path) as z:
        wl = np.stack([z["wl_min_nm"], z["wl_center_nm"], z["wl_max_nm"]], -1).astype(float)
        return z["bands"], z["mask"], wl, [str(n) for n in z["band_names"]]


@pytest.fixture(scope="module")
def pixelnet(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An untrained PixelNet, seeded so that it predicts both cloud and non-cloud classes."""
    torch.manual_seed(4)  # cloud on ~90 % of the scene: both kinds present
    model = CloudMaskModel("pixelnet").eval()
    path = tmp_path_factory.mktemp("models") / "untrained-pixelnet.safetensors"
    return str(save_model(model, path, trained=False))


@pytest.mark.parametrize(("path", "reference_f1"), [(UKIS, 88.9), (CLOUD38, 85.9)])
def test_threshold_baseline_reproduces_the_reference_figures(path: Path, reference_f1: float):
    result = evaluate_npz(path, model="threshold")
    assert result["F1"] == pytest.approx(reference_f1, abs=0.5)
    values, mask, wl, _ = _load(path)
    visible = (wl[:, 1] >= 400) & (wl[:, 1] <= 700)
    pred = values[visible].mean(0) > 0.25
    _check(result, _scores(mask == 1, pred, mask != 255))
    assert result["model"] == "brightness-threshold:0.25" and result["unscored"] == 0


def test_npz_scores_match_a_mask_computed_directly(pixelnet: str) -> None:
    values, mask, wl, names = _load(UKIS)
    result = evaluate_npz(UKIS, model=pixelnet)
    direct = xsensei.cloudmask(values, wl, model=pixelnet)  # numpy path, not evaluate's xarray
    pred_cloud = np.isin(direct, [1, 2])
    assert 0 < pred_cloud.mean() < 1  # the seeded model is not constant
    _check(result, _scores(mask == 1, pred_cloud, mask != 255))
    assert result["bands"] == names and result["model"] == "untrained-pixelnet"
    assert result["per_class"]["cloud"]["F1"] == pytest.approx(result["F1"])
    edge = boundary_scores(NPZ_LABELS(mask), np.where(pred_cloud, 4, 0))
    assert result["boundary"] == pytest.approx(edge)
    assert 0 <= edge["errors_in_band"] <= 100 and edge["radius_px"] == 3
    # only RGB: the same scene with three bands
    rgb = evaluate_npz(UKIS, model=pixelnet, bands=["red", "green", "blue"])
    assert rgb["bands"] == ["S2_B04", "S2_B03", "S2_B02"]
    direct = xsensei.cloudmask(values[[2, 1, 0]], wl[[2, 1, 0]], model=pixelnet)
    _check(rgb, _scores(mask == 1, np.isin(direct, [1, 2]), mask != 255))


def test_band_selection() -> None:
    _, _, wl, names = _load(UKIS)
    assert select_bands(names, wl, "nir,swir16,B02") == [3, 4, 0]
    assert select_bands(names, wl, None) == list(range(6))
    with pytest.raises(ValueError, match="no band 'cirrus'"):
        select_bands(names, wl, ["cirrus"])


def test_patch_store_scores_pool_patches_and_tags(pixelnet: str, tmp_path: Path) -> None:
    values, mask, _, _ = _load(CLOUD38)
    image = xr.DataArray(values, dims=("band", "y", "x"),
                         coords={"band": ["B2", "B3", "B4", "B5"]}, attrs={"platform": "landsat-8"})
    label = xr.DataArray(mask, dims=("y", "x"))
    patches = []
    for k, tags in enumerate((["38-cloud", "left"], ["38-cloud", "right"])):
        half = slice(0, 192) if k == 0 else slice(192, 384)
        patches += patches_from_xarray(image.isel(x=half), label.isel(x=half), patch_size=96,
                                       label_map={0: "clear", 1: "cloud"}, tags=tags)
    store = build_store(tmp_path / "p.zarr", patches)
    result = evaluate_store(store.path, model=pixelnet, per_patch=True)
    preds = [xsensei.cloudmask(p.image, p.descriptors, model=pixelnet) for p in patches]
    truth = np.stack([p.label == 4 for p in patches])
    pred = np.isin(np.stack(preds), [1, 2])
    valid = np.stack([p.label != 255 for p in patches])
    _check(result, _scores(truth, pred, valid))
    left = np.array(["left" in p.tags for p in patches])
    _check(result["tags"]["left"], _scores(truth[left], pred[left], valid[left]))
    _check(result["tags"]["right"], _scores(truth[~left], pred[~left], valid[~left]))
    assert result["tags"]["38-cloud"]["n"] == result["n"] == mask.size
    assert result["n_patches"] == len(patches) == 16 and len(result["patches"]) == 16
    # the edge split pools over patches, each patch with its own band around its clouds
    band = np.stack([boundary_band(p.label) for p in patches])
    wrong = valid & (truth != pred)
    edges = result["boundary"]
    assert 0 < wrong.sum() and edges["errors_in_band"] == pytest.approx(
        100 * (wrong & band).sum() / wrong.sum())
    assert edges["F1_outside_band"] == pytest.approx(_scores(truth, pred, valid & ~band)["F1"])
    assert edges["boundary_share"] == pytest.approx(100 * (band & valid).sum() / valid.sum())
    # the baseline over patches pools to the whole-scene figure
    base = evaluate_store(store.path, model=BrightnessThreshold())
    assert base["F1"] == pytest.approx(evaluate_npz(CLOUD38, model="threshold")["F1"])
    # the same patches as paper directories
    export_paper_dirs(patches[:4], tmp_path / "paper")
    paper = evaluate_source(tmp_path / "paper", model="threshold")
    assert paper["kind"] == "paper" and paper["n"] == 4 * 96 * 96


@pytest.fixture(scope="module")
def stac_item(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One STAC 1.0 item of four real Landsat 8 bands and a threshold label asset."""
    tmp = tmp_path_factory.mktemp("stac")
    bands = STAC_BANDS
    read = {b: rasterio.open(L8_DIR / f"{SCENE}_{b}_toa.tif") for b in bands}
    vis = np.mean([read[b].read(1) for b in ("B2", "B3", "B4")], axis=0)
    label = (vis > 0.25).astype(np.uint8)
    label[read["B2"].read(1) == 0] = 255
    with rasterio.open(tmp / "labels.tif", "w", **(read["B2"].profile | {"dtype": "uint8",
                                                                         "nodata": 255})) as dst:
        dst.write(label, 1)
    for r in read.values():
        r.close()
    item = pystac.Item("l8", None, None, datetime(2015, 10, 22, tzinfo=UTC),
                       {"platform": "landsat-8", "label:type": "raster",
                        "label:classes": [{"name": None, "classes": ["clear", "cloud"]}]})
    for b, (centre, fwhm) in bands.items():
        eo = {"name": b, "center_wavelength": centre, "full_width_half_max": fwhm}
        item.add_asset(b, pystac.Asset(str(L8_DIR / f"{SCENE}_{b}_toa.tif"), roles=["data"],
                                       extra_fields={"eo:bands": [eo],
                                                     "raster:bands": [{"nodata": 0}]}))
    item.add_asset("labels", pystac.Asset(str(tmp / "labels.tif"), roles=["labels"]))
    item.set_self_href(str(tmp / "item.json"))
    item.save_object(include_self_link=True)
    return tmp / "item.json"


def test_stac_scenes_through_the_product_path(stac_item: Path, pixelnet: str) -> None:
    # the labels are this very threshold: a perfect score over labelled pixels
    base = evaluate_stac(str(stac_item), model="threshold")
    assert base["F1"] == 100.0 and base["OA"] == 100.0 and base["n"] > 100_000
    result = evaluate_stac(str(stac_item), model=pixelnet, tags=["l8"])
    # the same scene loaded by hand as stackstac would give it, masked by the product API
    stack = xr.concat([rioxarray.open_rasterio(L8_DIR / f"{SCENE}_{b}_toa.tif").isel(band=0)
                       for b in STAC_BANDS], dim="band")
    stack = stack.where(stack != 0).assign_coords(
        band=list(STAC_BANDS),
        center_wavelength=("band", [c for c, _ in STAC_BANDS.values()]),
        full_width_half_max=("band", [f for _, f in STAC_BANDS.values()]),
    )
    direct = stack.sensei.cloudmask(sensor="landsat-8", model=pixelnet).values
    with rasterio.open(stac_item.parent / "labels.tif") as src:
        label = src.read(1)
    scored = (label != 255) & (direct != 255)
    assert result["n"] == scored.sum() and result["unscored"] == ((label != 255) & ~scored).sum()
    _check(result, _scores(label == 1, np.isin(direct, [1, 2]), scored))
    assert result["tags"]["l8"]["n"] == result["n"] and result["items"] == ["l8"]
    edge = boundary_band(np.where(label == 1, 4, label))
    assert result["boundary"]["F1_outside_band"] == pytest.approx(
        _scores(label == 1, np.isin(direct, [1, 2]), scored & ~edge)["F1"])


def test_command_line_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="xsensei")
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "scores.json"
    args = parser.parse_args(["evaluate", str(UKIS), str(CLOUD38), "--model", "threshold",
                              "--bands", "red,green,blue", "--json", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "ukis_sentinel2_512.npz" in text and "88.9" in text and "85.8" in text
    assert text.count("px of the labelled cloud edges") == 2
    rows = json.loads(out.read_text())
    assert [r["source"] for r in rows] == [str(UKIS), str(CLOUD38)]
    assert rows[0]["bands"] == ["S2_B04", "S2_B03", "S2_B02"]
    before = out.read_bytes()
    again = ["evaluate", str(UKIS), "--model", "threshold", "--json", str(out)]
    with pytest.raises(FileExistsError, match="--overwrite"):  # refused before evaluating
        args.func(parser.parse_args(again))
    assert out.read_bytes() == before
    assert args.func(parser.parse_args([*again, "--overwrite"])) == 0
    assert [r["source"] for r in json.loads(out.read_text())] == [str(UKIS)]
