"""Patch store and its three builders: xarray cubes, STAC items, the paper's directories.

The STAC catalog is built here (pystac) around the real Landsat 8 GeoTIFFs in
``shared/data/real/landsat8-rio-cloudmask`` (read in place, never copied) plus a label GeoTIFF
written on the same grid by a brightness threshold.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

from xsensei.sensors import get_sensor
from xsensei.training.patches import (
    NODATA_LABEL,
    SCHEME_CLOUD,
    SCHEME_FULL,
    LabelMap,
    Patch,
    PatchStore,
    build_store,
    class_value,
    export_paper_dirs,
    make_metadata,
    patch_windows,
    patches_from_paper_dirs,
    patches_from_stac,
    patches_from_xarray,
    read_paper_dir,
)

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
L8_DIR = SHARED / "data" / "real" / "landsat8-rio-cloudmask"
NPZ_38CLOUD = SHARED / "data" / "real" / "38cloud_l8_patch192_384.npz"
SCENE = "LC80130312015295LGN00"
#: band -> (centre um, FWHM um, common name) as USGS STAC items give them
L8_BANDS = {
    "B1": (0.443, 0.016, "coastal"),
    "B2": (0.482, 0.060, "blue"),
    "B3": (0.561, 0.057, "green"),
    "B4": (0.655, 0.037, "red"),
    "B5": (0.865, 0.028, "nir08"),
    "B6": (1.609, 0.085, "swir16"),
    "B7": (2.201, 0.187, "swir22"),
    "B9": (1.373, 0.021, "cirrus"),
    "B10": (10.895, 0.590, "lwir11"),
    "B11": (12.005, 1.010, "lwir12"),
}
THERMAL_RANGE_K = {"B10": (132.0, 249.0), "B11": (127.0, 239.0)}
PATCH = 128


def _read(band: str) -> np.ndarray:
    with rasterio.open(L8_DIR / f"{SCENE}_{band}_toa.tif") as src:
        return src.read(1)


def _threshold_label() -> np.ndarray:
    """Source labels: 1 cloud (mean of B2-B4 > 0.25), 0 clear, 255 outside the footprint."""
    vis = np.mean([_read(b) for b in ("B2", "B3", "B4")], axis=0)
    label = (vis > 0.25).astype(np.uint8)
    label[_read("B1") == 0] = 255
    return label


def _item(
    item_id: str, bands: list[str], label_path: Path, stac11: bool
) -> pystac.Item:
    item = pystac.Item(
        id=item_id,
        geometry={"type": "Polygon", "coordinates": [[[-75, 40.5], [-74, 40.5], [-74, 41.3],
                                                      [-75, 41.3], [-75, 40.5]]]},
        bbox=[-75.0, 40.5, -74.0, 41.3],
        datetime=datetime(2015, 10, 22, 15, 40, tzinfo=UTC),
        properties={"platform": "landsat-8", "gsd": 120.0, "label:type": "raster",
                    "label:properties": None, "label:description": "brightness threshold",
                    "label:tasks": ["segmentation"]},
    )
    item.stac_extensions = [
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        "https://stac-extensions.github.io/label/v1.0.1/schema.json",
        "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    ]
    for b in bands:
        centre, fwhm, common = L8_BANDS[b]
        nodata = "nan" if b in THERMAL_RANGE_K else 0
        if stac11:
            extra = {"bands": [{"name": b, "eo:common_name": common, "eo:center_wavelength": centre,
                                "eo:full_width_half_max": fwhm, "nodata": nodata}]}
        else:
            extra = {"eo:bands": [{"name": b, "common_name": common, "center_wavelength": centre,
                                   "full_width_half_max": fwhm}],
                     "raster:bands": [{"nodata": nodata, "data_type": "float32"}]}
        item.add_asset(b, pystac.Asset(href=str(L8_DIR / f"{SCENE}_{b}_toa.tif"),
                                       media_type=pystac.MediaType.GEOTIFF, roles=["data"],
                                       extra_fields=extra))
    label_extra: dict = {}
    if stac11:  # value -> name from the classification extension
        label_extra = {"classification:classes": [
            {"value": 0, "name": "clear"}, {"value": 1, "name": "cloud"},
            {"value": 255, "name": "no data"}]}
    else:  # label:classes as names, value = position; 255 is the file's nodata
        item.properties["label:classes"] = [{"name": None, "classes": ["clear", "cloud"]}]
    item.add_asset("labels", pystac.Asset(href=str(label_path),
                                          media_type=pystac.MediaType.GEOTIFF,
                                          roles=["labels"], extra_fields=label_extra))
    return item


@pytest.fixture(scope="module")
def stac_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("stac")
    label_path = tmp / "labels.tif"
    with rasterio.open(L8_DIR / f"{SCENE}_B1_toa.tif") as src:
        profile = src.profile | {"dtype": "uint8", "nodata": 255}
    with rasterio.open(label_path, "w", **profile) as dst:
        dst.write(_threshold_label(), 1)
    cat = pystac.Catalog("l8-test", "real Landsat 8 with threshold labels")
    cat.add_item(_item("l8-stac10", list(L8_BANDS), label_path, stac11=False))
    cat.add_item(_item("l8-stac11", ["B2", "B3", "B4", "B5", "B10"], label_path, stac11=True))
    cat.normalize_hrefs(str(tmp / "catalog"))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return tmp / "catalog" / "catalog.json"


@pytest.fixture(scope="module")
def stac_patches(stac_catalog: Path) -> list[Patch]:
    tags = lambda item: ["landsat", item.id]  # noqa: E731
    return list(patches_from_stac(str(stac_catalog), patch_size=PATCH, tags=tags))


def _expected_values(band: str, r: int, c: int) -> np.ndarray:
    raw = _read(band)[r : r + PATCH, c : c + PATCH].astype(np.float32)
    if band in THERMAL_RANGE_K:  # degC -> K -> (BT - min) / (max - min), paper eq. 4
        lo, hi = THERMAL_RANGE_K[band]
        return ((raw.astype(np.float64) + 273.15 - lo) / (hi - lo)).astype(np.float32)
    raw[raw == 0] = np.nan
    return raw


def _assert_same(a: Patch, b: Patch) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.dtype == b.image.dtype == np.float32
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)
    assert a.metadata == b.metadata


# ---------------------------------------------------------------------------------------------


def test_windows_cover_the_scene() -> None:
    assert patch_windows(458, 508, 128) == [
        (r, c) for r in (0, 128, 256, 330) for c in (0, 128, 256, 380)
    ]
    assert patch_windows(263, 263, 263, 253) == [(0, 0)]
    assert patch_windows(100, 300, 128) == []


def test_label_maps_and_class_names() -> None:
    assert [class_value(n) for n in ("CLEAR", "Thick", "THIN", "SHADOW", "cloud", "FILL")] == [
        0, 1, 2, 3, 4, 255]
    lm = LabelMap({0: "clear", 1: "cloud", 2: "Cloud shadow", 255: "no data"})
    assert lm.scheme == "clear,cloud_shadow,cloud"
    np.testing.assert_array_equal(lm(np.array([[0, 1], [2, 255]])), [[0, 4], [3, 255]])
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        lm(np.array([0, 7]))
    with pytest.raises(ValueError, match="unknown class name"):
        LabelMap({0: "bananas"})
    # fill values outside 0-255 (int16 -1, uint16 65535), and NaN of a masked float label
    fills = LabelMap({-1: "nodata", 0: "clear", 1: "cloud", 65535: "nodata"})
    np.testing.assert_array_equal(fills(np.array([-1, 0, 1, 65535])), [255, 0, 4, 255])
    np.testing.assert_array_equal(fills(np.array([np.nan, 1.0])), [255, 4])
    with pytest.raises(ValueError, match=r"label values \[300\] are not in the label map"):
        fills(np.array([0, 300]))


def test_stac_patches_keep_values_descriptors_and_metadata(stac_patches: list[Patch]) -> None:
    assert len(stac_patches) == 32  # 16 windows per item, two items
    label = _threshold_label()
    first10 = [p for p in stac_patches if p.metadata["scene_id"] == "l8-stac10"]
    first11 = [p for p in stac_patches if p.metadata["scene_id"] == "l8-stac11"]
    assert len(first10) == len(first11) == 16
    for patches, bands in ((first10, list(L8_BANDS)), (first11, ["B2", "B3", "B4", "B5", "B10"])):
        expected_desc = np.array([
            [c * 1000 - f * 1000 / 2, c * 1000, c * 1000 + f * 1000 / 2]
            for c, f, _ in (L8_BANDS[b] for b in bands)
        ])
        for p in patches[::5]:
            r, c = p.metadata["window"]
            for i, b in enumerate(bands):
                np.testing.assert_array_equal(p.image[i], _expected_values(b, r, c), err_msg=b)
            np.testing.assert_allclose(p.descriptors, expected_desc, rtol=1e-12)
            want = np.where(label == 1, 4, label)[r : r + PATCH, c : c + PATCH].copy()
            want[~np.isfinite(p.image).all(0)] = NODATA_LABEL
            np.testing.assert_array_equal(p.label, want)
        meta = patches[0].metadata
        assert meta["sensor"] == "landsat-8"
        assert meta["resolution_m"] == 120.0
        assert meta["band_names"] == bands
        assert meta["label_scheme"] == SCHEME_CLOUD
        assert meta["tags"] == ["landsat", meta["scene_id"]]
        assert meta["source"] == "stac"
    # the partly cloudy scene gives cloud, clear and unlabelled pixels
    values = np.unique(np.concatenate([p.label.ravel() for p in stac_patches]))
    assert values.tolist() == [0, 4, 255]


def test_store_round_trip_with_variable_band_counts(stac_patches: list[Patch], tmp_path) -> None:
    store = build_store(tmp_path / "p.zarr", stac_patches)
    assert len(store) == 32 and store.patch_size == (PATCH, PATCH)
    assert sorted(set(store.band_counts.tolist())) == [5, 10]
    reopened = PatchStore(tmp_path / "p.zarr")
    for a, b in zip(stac_patches, reopened, strict=True):
        _assert_same(a, b)
    # band subsets and windows read only what is asked, in the order asked
    p = stac_patches[3]
    sub = reopened.read_image(3, bands=[4, 0, 2], window=(5, 69, 10, 74))
    np.testing.assert_array_equal(sub, p.image[[4, 0, 2], 5:69, 10:74])
    np.testing.assert_array_equal(reopened.descriptors(3, bands=[4, 0]), p.descriptors[[4, 0]])
    assert reopened.indices("l8-stac11") == list(range(16, 32))
    # appending keeps what is there
    build_store(tmp_path / "p.zarr", stac_patches[:2], append=True)
    again = PatchStore(tmp_path / "p.zarr")
    assert len(again) == 34
    _assert_same(again[33], stac_patches[1])
    _assert_same(again[31], stac_patches[31])
    with pytest.raises(FileExistsError):
        build_store(tmp_path / "p.zarr", stac_patches)
    attrs = json.loads((tmp_path / "p.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["format"] == "xsensei-patches" and attrs["patch_size"] == [PATCH, PATCH]
    assert len(build_store(tmp_path / "p.zarr", stac_patches[:3], overwrite=True)) == 3
    # overwrite replaces a patch store, never a folder of something else
    folder = tmp_path / "scenes"
    (folder / "labels").mkdir(parents=True)
    (folder / "scene_B04.tif").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="not an xsensei patch store"):
        build_store(folder, stac_patches[:1], overwrite=True)
    assert (folder / "scene_B04.tif").read_bytes() == b"mine" and (folder / "labels").is_dir()


def test_xarray_cube_builder_uses_the_inference_metadata_path(tmp_path) -> None:
    """The real 38-Cloud scene as a (band, y, x) cube named like Landsat 8 bands: the
    wavelengths come from the sensor catalogue, as they would for inference."""
    with np.load(NPZ_38CLOUD) as z:
        values, mask = z["bands"], z["mask"]
    image = xr.DataArray(values, dims=("band", "y", "x"),
                         coords={"band": ["B2", "B3", "B4", "B5"]},
                         attrs={"platform": "landsat-8"}).chunk({"y": 100, "x": 100})
    label = xr.DataArray(mask, dims=("y", "x"))
    patches = list(patches_from_xarray(
        image, label, patch_size=160, stride=112, label_map={0: "clear", 1: "cloud", 255: 255},
        scene_id="38cloud", resolution_m=30.0, tags=["38-cloud", "human"]))
    assert [p.metadata["window"] for p in patches] == [
        [r, c] for r in (0, 112, 224) for c in (0, 112, 224)
    ]
    sensor = get_sensor("landsat-8")
    want_desc = np.array([[b.wl_min_nm, b.wl_center_nm, b.wl_max_nm]
                          for b in (sensor.find_band(n) for n in ("B2", "B3", "B4", "B5"))])
    for p in patches:
        r, c = p.metadata["window"]
        np.testing.assert_array_equal(p.image, values[:, r : r + 160, c : c + 160])
        np.testing.assert_array_equal(p.label, np.where(mask == 1, 4, mask)[r : r + 160,
                                                                            c : c + 160])
        np.testing.assert_array_equal(p.descriptors, want_desc)
        assert p.metadata == make_metadata(
            sensor="landsat-8", scene_id="38cloud", resolution_m=30.0,
            tags=["38-cloud", "human"], label_scheme=SCHEME_CLOUD,
            band_names=["B2", "B3", "B4", "B5"], window=(r, c), source="xarray")
    store = build_store(tmp_path / "x.zarr", patches)
    for a, b in zip(patches, store, strict=True):
        _assert_same(a, b)
    # a labelled-fraction threshold drops patches; labels outside the map are refused
    assert list(patches_from_xarray(image, label, patch_size=160, min_labelled=1.01,
                                    label_map={0: 0, 1: "cloud"})) == []
    with pytest.raises(ValueError, match="not in the label map"):
        list(patches_from_xarray(image, label, patch_size=160, label_map={0: 0}))


def test_xarray_labels_follow_the_image_grid_and_images_must_be_reflectance() -> None:
    """A label read as (1, y, x), stored (x, y), or with y ascending lands on the image's
    pixels; a label on another grid, DN without a scale or a scale applied twice are refused."""
    rng = np.random.default_rng(1)
    y = 5_000_000.0 - 30.0 * np.arange(40)
    x = 500_000.0 + 30.0 * np.arange(40)
    image = xr.DataArray(rng.uniform(0.02, 0.5, (4, 40, 40)).astype(np.float32),
                         dims=("band", "y", "x"), coords={"band": ["B2", "B3", "B4", "B5"],
                                                          "y": y, "x": x})
    truth = rng.integers(0, 2, (40, 40)).astype(np.uint8)
    label = xr.DataArray(truth, dims=("y", "x"), coords={"y": y, "x": x})
    kw = {"patch_size": 40, "sensor": "landsat-8", "label_map": {0: "clear", 1: "cloud"}}

    def stored(lab: xr.DataArray) -> np.ndarray:
        (patch,) = patches_from_xarray(image, lab, **kw)
        return patch.label

    want = np.where(truth == 1, 4, 0)
    np.testing.assert_array_equal(stored(label), want)
    (patch,) = patches_from_xarray(image.rio.write_crs(32633), label, **kw)
    assert patch.metadata["resolution_m"] == 30.0
    (patch,) = patches_from_xarray(image.rio.write_crs(4326), label, **kw)
    assert patch.metadata["resolution_m"] is None  # degrees are not metres
    np.testing.assert_array_equal(stored(label.expand_dims(band=[1])), want)  # open_rasterio
    np.testing.assert_array_equal(stored(label.transpose("x", "y")), want)
    np.testing.assert_array_equal(stored(label.isel(y=slice(None, None, -1))), want)
    with pytest.raises(ValueError, match=r"label's 'x' coords .* are not the image's 'x'"):
        stored(label.assign_coords(x=x + 300.0))  # 10 px east
    with pytest.raises(ValueError, match="digital numbers"):
        list(patches_from_xarray((image * 10000).round(), label, **kw))  # float DN, no scale
    with pytest.raises(ValueError, match="reflectance already.*applied twice"):
        list(patches_from_xarray(image, label, scale=1e-4, **kw))
    with pytest.raises(ValueError, match=r"\[0\.45, 0\.48, 0\.51\] nm .*300 nm"):  # um
        Patch(image.values, truth, np.array([[0.45, 0.48, 0.51]] * 4))


def test_paper_directories_round_trip(stac_patches: list[Patch], tmp_path) -> None:
    dirs = export_paper_dirs(stac_patches[14:18], tmp_path / "paper")
    d = dirs[0]
    image = np.load(d / "image.npy")
    mask = np.load(d / "mask.npy")
    meta = json.loads((d / "metadata.json").read_text())
    assert image.shape == (PATCH, PATCH, 10) and image.dtype == np.float32
    assert mask.shape == (PATCH, PATCH, 2) and meta["classes"] == ["clear", "cloud"]
    assert np.load(d / "descriptors.npy").shape == (10, 3)
    assert meta["spacecraft_id"] == "landsat-8" and meta["bands"][0] == "B1"
    back = list(patches_from_paper_dirs(tmp_path / "paper"))
    assert len(back) == 4
    with pytest.raises(FileExistsError, match="already holds 4 patch_"):
        export_paper_dirs(stac_patches[14:16], tmp_path / "paper")
    export_paper_dirs(stac_patches[14:16], tmp_path / "smaller", overwrite=True)
    assert len(list(patches_from_paper_dirs(tmp_path / "paper"))) == 4  # untouched
    for a, b in zip(stac_patches[14:18], back, strict=True):
        _assert_same(a, b)
    # paper dirs -> store -> identical again
    store = build_store(tmp_path / "from-paper.zarr", patches_from_paper_dirs(tmp_path / "paper"))
    for a, b in zip(stac_patches[14:18], store, strict=True):
        _assert_same(a, b)
    export_paper_dirs(stac_patches[20:22], tmp_path / "paper", overwrite=True)
    for a, b in zip(stac_patches[20:22], patches_from_paper_dirs(tmp_path / "paper"),
                    strict=True):  # 2 patches, none of the 4 old ones left over
        _assert_same(a, b)


def test_original_eo4ai_directory(tmp_path) -> None:
    """A directory as the paper's pipeline wrote it (Biome classes, no xsensei metadata)."""
    rng = np.random.default_rng(0)
    classes = ["FILL", "SHADOW", "CLEAR", "THIN", "THICK"]
    idx = rng.integers(0, 5, size=(8, 8))
    onehot = np.eye(5, dtype=bool)[idx]
    onehot[0, 0] = False  # a pixel with no class at all
    image = rng.random((8, 8, 3), dtype=np.float32)
    d = tmp_path / "scene_a" / "patch_1"
    d.mkdir(parents=True)
    np.save(d / "image.npy", image)
    np.save(d / "mask.npy", onehot)
    np.save(d / "descriptors.npy", np.array([[452.0, 482.0, 512.0], [533.0, 562.0, 590.0],
                                             [636.0, 655.0, 673.0]]))
    (d / "metadata.json").write_text(json.dumps({
        "spacecraft_id": "Landsat8", "scene_id": "LC8abc", "bands": ["B2", "B3", "B4"],
        "band_types": ["TOA Reflectance"] * 3, "band_centres": [482, 562, 655],
        "band_widths": [60, 57, 37], "classes": classes, "named_bands": {"Blue": 0},
        "sun_elevation": 41.5}))
    p = read_paper_dir(d, tags=["biome"])
    want = np.array([255, 3, 0, 2, 1], dtype=np.uint8)[idx]
    want[0, 0] = 255
    np.testing.assert_array_equal(p.label, want)
    np.testing.assert_array_equal(p.image, np.moveaxis(image, -1, 0))
    assert p.metadata["sensor"] == "Landsat8" and p.metadata["scene_id"] == "LC8abc"
    assert p.metadata["label_scheme"] == SCHEME_FULL
    assert p.metadata["band_names"] == ["B2", "B3", "B4"]
    assert p.metadata["tags"] == ["biome"] and p.metadata["sun_elevation"] == 41.5
    assert [q.metadata["scene_id"] for q in patches_from_paper_dirs(tmp_path)] == ["LC8abc"]
