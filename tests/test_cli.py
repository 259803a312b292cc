"""The ``xsensei`` command line, run as users run it: ``python -m xsensei.cli ...``.

``demo`` and the first ``mask`` of each output format run as real subprocesses; the repeat runs
(resume, refusal, overwrite) call :func:`xsensei.cli.main` in-process, which is what the
``xsensei`` console script and ``python -m xsensei.cli`` both end in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from affine import Affine
from dask.callbacks import Callback

import xsensei
from xsensei.cli import main
from xsensei.demo import DEMO_BANDS, demo_scene

# rioxarray (not xsensei) still multiplies Affine objects with `*`
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRANSFORM = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 5200000.0)


def run_cli(*args: str | os.PathLike[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m xsensei.cli ARGS`` in a fresh interpreter, importing this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "xsensei.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )


def snapshot(path: Path) -> dict[Path, tuple[int, bytes]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


@pytest.fixture(scope="module")
def scene() -> xr.DataArray:
    return demo_scene(size=96, seed=3)


@pytest.fixture(scope="module")
def geotiff(scene: xr.DataArray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-band float32 reflectance GeoTIFF with band descriptions blue .. swir22."""
    path = tmp_path_factory.mktemp("cli-input") / "scene.tif"
    profile = {
        "driver": "GTiff",
        "width": 96,
        "height": 96,
        "count": 6,
        "dtype": "float32",
        "crs": "EPSG:32633",
        "transform": TRANSFORM,
        "tiled": True,
        "blockxsize": 32,
        "blockysize": 32,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(scene.values.astype(np.float32))
        for i, name in enumerate(DEMO_BANDS, start=1):
            dst.set_band_description(i, name)
    return path


@pytest.fixture(scope="module")
def expected(geotiff: Path, pixelnet_ckpt: Path) -> np.ndarray:
    """The same mask computed in-process through the Python API."""
    data = rioxarray.open_rasterio(geotiff, chunks={"x": 64, "y": 64})
    data = data.assign_coords(band=list(DEMO_BANDS))
    return xsensei.cloudmask(data, sensor="landsat-8", model=pixelnet_ckpt).values


@pytest.mark.slow  # a fresh interpreter plus DeepLabv3+ on CPU: 13-40 s
def test_demo_as_a_subprocess(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "--out", out, "--size", "256")
    assert proc.returncode == 0, proc.stderr
    cube, png = out / "demo-mask.zarr", out / "demo-quicklook.png"
    assert f"zarr cube: {cube}" in proc.stdout
    assert f"quicklook: {png}" in proc.stdout
    assert "NOTE" not in proc.stdout + proc.stderr  # the shipped default model runs

    ds = xr.open_zarr(cube, decode_coords="all")
    mask = ds["cloud_mask"]
    assert mask.dtype == np.uint8
    assert mask.shape == (256, 256)
    assert mask.rio.crs.to_epsg() == 32633
    assert mask.rio.transform() == demo_scene(size=256).rio.transform()
    assert set(np.unique(mask.values)) <= {0, 1, 2, 3, 255}
    assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_console_script_if_installed():
    exe = shutil.which("xsensei")
    if exe is None:
        pytest.skip("the xsensei console script is not installed (pip install -e .)")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout and "mask" in proc.stdout


def test_mask_geotiff_to_zarr_resume_and_refuse(geotiff, pixelnet_ckpt, expected, tmp_path, capsys):
    store = tmp_path / "mask.zarr"
    args = [
        "mask",
        geotiff,
        store,
        "--sensor",
        "landsat-8",
        "--model",
        pixelnet_ckpt,
        "--chunks",
        "64",
    ]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {store}: 4 chunks written, 0 already done" in proc.stdout

    ds = xr.open_zarr(store, decode_coords="all")
    mask = ds["cloud_mask"]
    assert mask.dtype == np.uint8 and mask.dims == ("y", "x")
    assert mask.rio.crs.to_epsg() == 32633
    assert mask.rio.transform() == TRANSFORM
    np.testing.assert_array_equal(mask.values, expected)
    before = snapshot(store)

    assert main([*map(str, args), "--resume", "--quiet"]) == 0
    assert "0 chunks written, 4 already done" in capsys.readouterr().out
    assert snapshot(store).keys() == before.keys()
    data_files = [p for p in before if "cloud_mask" in p.parts and p.name != "zarr.json"]
    assert data_files and all(snapshot(p) == {p: before[p]} for p in data_files)

    before = snapshot(store)
    # another precision makes another mask: resume refuses instead of mixing the two
    assert main([*map(str, args), "--resume", "--precision", "bf16", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "precision auto" in err and "precision bf16" in err
    assert snapshot(store) == before

    assert main([*map(str, args), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xsensei mask: error: ")
    assert str(store) in err and "already exists" in err
    assert "--overwrite" in err and "--resume" in err  # CLI flags, not Python keywords
    assert snapshot(store) == before


def test_ctrl_c_keeps_the_chunks_and_says_how_to_resume(
    geotiff, pixelnet_ckpt, expected, tmp_path, capsys
):
    """Ctrl-C after the first stored chunk (raised where Dask's local scheduler reports a task
    done, as a real one arrives there): exit 130, one line, no traceback; a resume finishes."""
    store = tmp_path / "mask.zarr"
    args = ["mask", geotiff, store, "--sensor", "landsat-8", "--model", pixelnet_ckpt,
            "--chunks", "64", "--quiet"]
    done_dir = store / "_xsensei" / "done" / "c"

    def done() -> int:
        return sum(not f.endswith(".partial") for _, _, fs in os.walk(done_dir) for f in fs)

    def ctrl_c(*_: object) -> None:
        if done() >= 1:
            raise KeyboardInterrupt

    with Callback(posttask=ctrl_c):
        assert main(list(map(str, args))) == 130
    kept = done()
    assert 1 <= kept < 4
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("xsensei mask: interrupted\n"), err
    assert f"{kept} of 4 chunks of {store} are stored" in err
    assert "rerun the same command with --resume" in err and "Traceback" not in err

    assert main([*map(str, args), "--resume"]) == 0
    assert f"{4 - kept} chunks written, {kept} already done" in capsys.readouterr().out
    mask = xr.open_zarr(store, decode_coords="all")["cloud_mask"]
    np.testing.assert_array_equal(mask.values, expected)


def test_mask_geotiff_to_cog_and_refuse(geotiff, pixelnet_ckpt, expected, tmp_path, capsys):
    cog = tmp_path / "mask.tif"
    args = ["mask", geotiff, cog, "--sensor", "landsat-8", "--model", pixelnet_ckpt]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {cog}" in proc.stdout
    with rasterio.open(cog) as src:
        assert src.crs.to_epsg() == 32633
        assert src.transform == TRANSFORM
        assert src.count == 1 and src.dtypes == ("uint8",)
        assert src.nodata == 255
        np.testing.assert_array_equal(src.read(1), expected)

    before = snapshot(cog)
    assert main([*map(str, args), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(cog) in err and "already exists" in err
    assert snapshot(cog) == before

    assert main([*map(str, args), "--overwrite", "--quiet"]) == 0
    assert f"wrote {cog}" in capsys.readouterr().out
    with rasterio.open(cog) as src:
        np.testing.assert_array_equal(src.read(1), expected)


def test_mask_unknown_sensor_exits_2(geotiff, pixelnet_ckpt, tmp_path, capsys):
    out = tmp_path / "never.zarr"
    code = main(
        [
            "mask",
            str(geotiff),
            str(out),
            "--sensor",
            "landsat-88",
            "--model",
            str(pixelnet_ckpt),
            "--quiet",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "Unknown sensor 'landsat-88'" in err and "landsat-8" in err
    assert not out.exists()




def test_precision_choices_are_the_engine_precisions():
    """The CLI spells the choices out (``--help`` imports no torch); they must not drift."""
    import argparse

    from xsensei.cli import add_precision_argument
    from xsensei.engine.runtime import PRECISIONS

    parser = argparse.ArgumentParser()
    add_precision_argument(parser)
    action = next(a for a in parser._actions if a.dest == "precision")
    assert tuple(action.choices) == PRECISIONS and action.default == "auto"
