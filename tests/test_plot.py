"""xsensei.plot: quicklook PNGs and the cloud-cover summary table."""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from affine import Affine

from xsensei.engine.output import wrap_output
from xsensei.plot import quicklook, save_quicklook, summary

# rioxarray (not xsensei) still multiplies Affine objects with `*` when recomputing transforms
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

TRANSFORM = Affine(20.0, 0.0, 300000.0, 0.0, -20.0, 4700000.0)
FOUR = ["clear", "thick_cloud", "thin_cloud", "cloud_shadow"]


def scene(ny: int = 60, nx: int = 80, nt: int = 1):
    """Image bands with distinct spatial patterns (so a channel's source is recognisable)."""
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    patterns = {
        "nir": np.full((ny, nx), 0.3, np.float32) + 0.01 * ((yy + xx) % 3),
        "red": xx / nx,  # horizontal ramp
        "blue": ((yy // 10 + xx // 10) % 2).astype(np.float32),  # checkerboard
        "green": yy / ny,  # vertical ramp
    }
    bands = np.stack(list(patterns.values()))
    times = np.array(["2024-05-01T10:00", "2024-05-11T10:00"], "datetime64[ns]")[:nt]
    image = xr.DataArray(
        da.from_array(np.broadcast_to(bands, (nt, *bands.shape)).copy(), chunks=(1, 4, 30, 40)),
        dims=("time", "band", "y", "x"),
        coords={
            "time": times,
            "band": ["B08", "B04", "B02", "B03"],
            "common_name": ("band", list(patterns)),
            "y": TRANSFORM.f + TRANSFORM.e * (np.arange(ny) + 0.5),
            "x": TRANSFORM.c + TRANSFORM.a * (np.arange(nx) + 0.5),
        },
    ).rio.write_crs("EPSG:32633")
    classes = np.zeros((nt, ny, nx), np.uint8)
    classes[:, 10:30, 10:40] = 1
    classes[:, 30:40, 10:40] = 2
    classes[:, 40:50, 10:40] = 3
    classes[:, :, 70:] = 255
    mask = wrap_output(
        da.from_array(classes, chunks=(1, 30, 40)),
        image,
        kind="mask",
        classes=FOUR,
        model_name="m",
        model_version="1",
    )
    return image, mask


def test_summary_numbers_on_known_fractions():
    values = np.zeros((2, 10, 10), np.uint8)  # time 0: 100 px
    values[0, 0, :] = 255  # 10 nodata -> 90 valid
    values[0, 1:4, :] = 1  # 30 thick
    values[0, 4:6, :] = 2  # 20 thin
    values[0, 6, :9] = 3  # 9 shadow, 31 clear
    values[1] = 255  # time 1: nothing valid
    image, _ = scene(10, 10, nt=2)
    mask = wrap_output(
        da.from_array(values, chunks=(1, 5, 5)),
        image,
        kind="mask",
        classes=FOUR,
        model_name="m",
        model_version="1",
    )
    table = summary(mask)
    assert list(table.columns) == ["clear", "thick_cloud", "thin_cloud", "cloud_shadow", "nodata"]
    assert list(table.index) == list(mask.time.values)
    first = table.iloc[0]
    assert first["clear"] == pytest.approx(100 * 31 / 90)
    assert first["thick_cloud"] == pytest.approx(100 * 30 / 90)
    assert first["thin_cloud"] == pytest.approx(100 * 20 / 90)
    assert first["cloud_shadow"] == pytest.approx(100 * 9 / 90)
    assert first["nodata"] == pytest.approx(10.0)
    assert first[FOUR].sum() == pytest.approx(100.0)
    second = table.iloc[1]
    assert second[FOUR].isna().all() and second["nodata"] == 100.0


def test_summary_of_a_two_class_2d_mask():
    image, _ = scene(10, 10)
    values = np.zeros((10, 10), np.uint8)
    values[:4] = 1
    values[9] = 255
    mask = wrap_output(
        values,
        image.isel(time=0),
        kind="mask",
        classes=["clear", "cloud"],
        model_name="m",
        model_version="1",
    )
    table = summary(mask)
    assert list(table.columns) == ["clear", "cloud", "nodata"]
    assert table.loc[table.index[0], "cloud"] == pytest.approx(100 * 40 / 90)
    assert table.index.name == "time"


def test_save_quicklook_writes_a_png(tmp_path):
    image, mask = scene()
    path = save_quicklook(image, mask, tmp_path / "quicklook.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000

    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 50


def test_quicklook_picks_red_green_blue_and_overlays_classes():
    from matplotlib.figure import Figure

    image, mask = scene()
    ax = Figure().add_subplot()
    assert quicklook(image, mask, ax=ax, alpha=1.0) is ax
    composite = ax.images[0].get_array()
    overlay = ax.images[1].get_array()
    ny, nx = mask.shape[-2:]
    xx = np.broadcast_to(np.arange(nx), (ny, nx))
    yy = np.broadcast_to(np.arange(ny)[:, None], (ny, nx))
    # red channel <- the horizontal ramp (red band), green <- vertical ramp, blue <- checkerboard
    assert np.corrcoef(composite[..., 0].ravel(), xx.ravel())[0, 1] > 0.95
    assert np.corrcoef(composite[..., 1].ravel(), yy.ravel())[0, 1] > 0.95
    assert np.corrcoef(composite[..., 2].ravel(), ((yy // 10 + xx // 10) % 2).ravel())[0, 1] > 0.95
    # overlay: clear and nodata transparent, thin cloud lighter than thick, shadow dark
    assert overlay[0, 0, 3] == 0 and overlay[0, 75, 3] == 0
    thick, thin, shadow = overlay[20, 20], overlay[35, 20], overlay[45, 20]
    assert thick[3] == thin[3] == shadow[3] == 1.0
    assert thin[:3].sum() > thick[:3].sum() > shadow[:3].sum()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["thick cloud", "thin cloud", "cloud shadow"]


def test_quicklook_band_choice_from_wavelengths_and_explicit_rgb():
    from matplotlib.figure import Figure

    image, mask = scene()
    image = image.drop_vars("common_name")
    wavelengths = [842.0, 665.0, 490.0, 560.0]
    ax = quicklook(image, mask, wavelengths_nm=wavelengths, ax=Figure().add_subplot())
    xx = np.broadcast_to(np.arange(80), (60, 80))
    assert np.corrcoef(ax.images[0].get_array()[..., 0].ravel(), xx.ravel())[0, 1] > 0.95

    image_um = image.assign_coords(center_wavelength=("band", [0.842, 0.665, 0.49, 0.56]))
    ax = quicklook(image_um, mask, ax=Figure().add_subplot())
    assert np.corrcoef(ax.images[0].get_array()[..., 0].ravel(), xx.ravel())[0, 1] > 0.95

    ax = quicklook(image, mask, rgb=("B04", "B03", "B02"), ax=Figure().add_subplot())
    assert np.corrcoef(ax.images[0].get_array()[..., 0].ravel(), xx.ravel())[0, 1] > 0.95
    with pytest.raises(ValueError, match="not in the image's bands"):
        quicklook(image, mask, rgb=("B4", "B3", "B2"), ax=Figure().add_subplot())


def test_quicklook_of_a_dataset_equals_the_band_stacked_array():
    """An odc-stac style Dataset (one variable per band) shows as its bands stacked."""
    from matplotlib.figure import Figure

    import xsensei  # noqa: F401  (registers .sensei)

    image, mask = scene()
    image = image.drop_vars("common_name").assign_coords(band=["nir", "red", "blue", "green"])
    ds = image.to_dataset(dim="band")
    assert list(ds.data_vars) == ["nir", "red", "blue", "green"]
    ref = quicklook(image, mask, ax=Figure().add_subplot(), alpha=1.0)
    ax = ds.sensei.quicklook(mask, ax=Figure().add_subplot(), alpha=1.0)
    for got, want in zip(ax.images, ref.images, strict=True):
        np.testing.assert_array_equal(got.get_array(), want.get_array())
        assert got.get_extent() == want.get_extent()
    xx = np.broadcast_to(np.arange(80), (60, 80))
    assert np.corrcoef(ax.images[0].get_array()[..., 0].ravel(), xx.ravel())[0, 1] > 0.95
    # bands named by variable for rgb=
    ax = quicklook(ds, mask, rgb=("green", "red", "blue"), ax=Figure().add_subplot())
    assert np.corrcoef(ax.images[0].get_array()[..., 1].ravel(), xx.ravel())[0, 1] > 0.95


def test_quicklook_refuses_several_time_steps():
    image, mask = scene(nt=2)
    with pytest.raises(ValueError, match=r"2 time steps.*isel\(time=0\)"):
        quicklook(image, mask)


def test_plot_module_import_stays_light():
    code = "import sys, xsensei.plot; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
