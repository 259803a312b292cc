"""xsensei.io.zarr.to_zarr: real zarr v3 stores on disk, real Dask schedulers (no mocks)."""

from __future__ import annotations

import time
import uuid
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
import zarr
from affine import Affine

from xsensei.engine.output import wrap_output
from xsensei.io.zarr import ResumeMismatchError, ZarrWriteReport, to_zarr

# rioxarray (not xsensei) still multiplies Affine objects with `*` when reading back
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

CLASSES = ["clear", "thick_cloud", "thin_cloud", "cloud_shadow"]
TRANSFORM = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4500000.0)


def _values(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(
        np.array([0, 1, 2, 3, 255], np.uint8), size=shape, p=[0.4, 0.2, 0.1, 0.1, 0.2]
    )


def _template(shape: tuple[int, ...]) -> xr.DataArray:
    """A (time, band, y, x) image on a real UTM grid, like stackstac's output."""
    nt, ny, nx = shape
    times = np.array("2024-01-01", dtype="datetime64[ns]") + np.arange(nt) * np.timedelta64(5, "D")
    img = xr.DataArray(
        da.zeros((nt, 2, ny, nx), chunks=(1, 2, ny, nx), dtype=np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": times,
            "band": ["B04", "B08"],
            "y": TRANSFORM.f + TRANSFORM.e * (np.arange(ny) + 0.5),
            "x": TRANSFORM.c + TRANSFORM.a * (np.arange(nx) + 0.5),
            "common_name": ("band", ["red", "nir"]),
            "id": ("time", np.array([f"S2A_{i}" for i in range(nt)], dtype=object)),
        },
        attrs={"spec": "RasterSpec(...)", "scale_factor": 1e-4},
    )
    return img.rio.write_crs("EPSG:32618").rio.write_transform(TRANSFORM)


def make_mask(
    values: np.ndarray,
    chunks: tuple[int, ...] | tuple[tuple[int, ...], ...] = (1, 32, 32),
    *,
    block_fn=None,
    model_version: str = "1.0",
) -> xr.DataArray:
    """A wrapped mask whose blocks optionally go through ``block_fn`` (a stand-in model)."""
    data = da.from_array(values, chunks=chunks)
    if block_fn is not None:
        data = data.map_blocks(block_fn, dtype=np.uint8, meta=np.empty((0,) * data.ndim, np.uint8))
    return wrap_output(
        data,
        _template(values.shape),
        kind="mask",
        classes=CLASSES,
        model_name="sensei-test",
        model_version=model_version,
    )


def counting_model(
    log_dir: Path, fail_block: tuple[int, ...] | None = None, store: Path | None = None
):
    """A block function that leaves one file per computed block (works across processes).

    With ``fail_block`` it raises on that block the first time it is computed, like a model
    crashing mid-scene (a flag file makes the next attempt succeed). Before raising it waits
    (up to 10 s) until other tasks have stored a few chunks of ``store``, so the crash always
    interrupts a partial write whatever order the scheduler picks.
    """
    log_dir = Path(log_dir)

    def model(block, block_id=None):
        tag = ".".join(map(str, block_id))
        if fail_block is not None and tuple(block_id) == tuple(fail_block):
            flag = log_dir / "failed-once"
            if not flag.exists():
                flag.touch()
                deadline = time.monotonic() + 10
                while store is not None and time.monotonic() < deadline:
                    done = zarr.open_array(store, path="_xsensei/done", mode="r")[...]
                    if done.sum() >= 3:
                        break
                    time.sleep(0.02)
                raise RuntimeError(f"simulated crash on block {tag}")
        (log_dir / f"{tag}@{uuid.uuid4().hex}").touch()
        return block

    return model


def computed_blocks(log_dir: Path) -> list[tuple[int, ...]]:
    return [
        tuple(int(i) for i in p.name.split("@")[0].split("."))
        for p in log_dir.iterdir()
        if "@" in p.name
    ]


def done_blocks(store: Path) -> set[tuple[int, ...]]:
    done = zarr.open_array(store, path="_xsensei/done", mode="r")[...]
    return {tuple(int(i) for i in idx) for idx in np.argwhere(done == 1)}


def expected_fraction(values: np.ndarray) -> np.ndarray:
    valid = (values != 255).sum(axis=(1, 2))
    cloud = np.isin(values, (1, 2)).sum(axis=(1, 2))
    with np.errstate(invalid="ignore"):
        return (cloud / valid).astype(np.float32)


def test_round_trip_keeps_dtype_crs_transform_time_and_flags(tmp_path):
    values = _values((3, 64, 80))
    mask = make_mask(values)
    store = tmp_path / "mask.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quiet when right: no zarr/xarray warnings either way
        report = to_zarr(mask, store)
        ds = xr.open_zarr(store, decode_coords="all")
        got = ds["cloud_mask"]
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got.values, values)

    assert report == ZarrWriteReport(store, 18, 18, 0)
    assert got.rio.crs.to_wkt() == mask.rio.crs.to_wkt()
    assert got.rio.transform() == TRANSFORM
    assert got.rio.nodata == 255
    np.testing.assert_array_equal(got.time.values, mask.time.values)
    assert list(got.id.values) == [f"S2A_{i}" for i in range(3)]
    assert "band" not in ds.coords and "common_name" not in ds.coords
    assert got.attrs["flag_meanings"] == "clear thick_cloud thin_cloud cloud_shadow nodata"
    assert list(got.attrs["flag_values"]) == [0, 1, 2, 3, 255]
    assert got.attrs["model"] == "sensei-test" and got.attrs["model_version"] == "1.0"
    assert "spec" not in got.attrs
    assert got.encoding["chunks"] == (1, 32, 32)
    assert ds["cloud_fraction"].dtype == np.float32
    np.testing.assert_allclose(ds["cloud_fraction"].values, expected_fraction(values), rtol=1e-6)
    assert "_xsensei" not in ds.variables


def test_refuses_existing_store_with_a_helpful_message(tmp_path):
    values = _values((2, 32, 32))
    store = tmp_path / "mask.zarr"
    to_zarr(make_mask(values), store)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    with pytest.raises(FileExistsError) as err:
        to_zarr(make_mask(_values((2, 32, 32), seed=1)), store)
    message = str(err.value)
    assert str(store) in message and "overwrite=True" in message and "resume=True" in message
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    np.testing.assert_array_equal(xr.open_zarr(store)["cloud_mask"].values, values)


def test_overwrite_replaces_the_store(tmp_path):
    store = tmp_path / "mask.zarr"
    to_zarr(make_mask(_values((2, 64, 64))), store)
    new = _values((1, 32, 48), seed=3)
    report = to_zarr(make_mask(new, (1, 16, 16)), str(store), overwrite=True)
    assert report.chunks_written == report.chunks_total == 6
    ds = xr.open_zarr(store, decode_coords="all")
    np.testing.assert_array_equal(ds["cloud_mask"].values, new)
    assert ds.sizes == {"time": 1, "y": 32, "x": 48}


def test_overwrite_never_deletes_something_that_is_not_a_zarr_store(tmp_path):
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not a zarr store"):
        to_zarr(make_mask(_values((1, 16, 16)), (1, 16, 16)), precious, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_overwrite_and_resume_together_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        to_zarr(make_mask(_values((1, 16, 16))), tmp_path / "m.zarr", overwrite=True, resume=True)


def test_resume_on_missing_store_writes_it(tmp_path):
    report = to_zarr(make_mask(_values((1, 32, 32))), tmp_path / "m.zarr", resume=True)
    assert (report.chunks_written, report.chunks_skipped) == (1, 0)


def settle(store: Path, log: Path) -> None:
    """Wait until tasks still in flight after a failed compute have finished.

    Neither dask's thread pool nor a distributed worker stops a task that is already running
    when another task fails; such a task finishes its chunk (harmless: writes are atomic and
    identical) but would blur the counts below if it ended during the resume.
    """
    last, stable_since, deadline = None, time.monotonic(), time.monotonic() + 10
    while time.monotonic() < deadline:
        now = (len(done_blocks(store)), len(list(log.iterdir())))
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 0.5:
            return
        time.sleep(0.05)


def _interrupt_then_resume(tmp_path: Path, scheduler) -> None:
    """Crash one block on the first write, resume, and check only missing blocks ran again."""
    values = _values((3, 64, 96), seed=7)
    log = tmp_path / "log"
    log.mkdir()
    store = tmp_path / "mask.zarr"
    model = counting_model(log, fail_block=(1, 1, 2), store=store)

    with pytest.raises(RuntimeError, match="simulated crash") as err:
        to_zarr(make_mask(values, block_fn=model), store, scheduler=scheduler)
    assert any("resume=True" in note for note in getattr(err.value, "__notes__", []))
    settle(store, log)

    done_before = done_blocks(store)
    everything = set(np.ndindex(3, 2, 3))
    assert (1, 1, 2) not in done_before
    assert 0 < len(done_before) < len(everything)  # a real partial write

    for p in log.iterdir():
        p.unlink() if "@" in p.name else None
    report = to_zarr(make_mask(values, block_fn=model), store, resume=True, scheduler=scheduler)

    recomputed = computed_blocks(log)
    assert len(recomputed) == len(set(recomputed)), "a block was computed twice"
    assert set(recomputed) == everything - done_before
    assert report.chunks_written == len(recomputed)
    assert report.chunks_skipped == len(done_before)
    assert report.chunks_total == 18
    assert done_blocks(store) == everything

    reference = tmp_path / "reference.zarr"
    to_zarr(make_mask(values), reference, scheduler=scheduler)
    got, ref = (
        xr.open_zarr(store, decode_coords="all"),
        xr.open_zarr(reference, decode_coords="all"),
    )
    xr.testing.assert_identical(got, ref)
    np.testing.assert_array_equal(got["cloud_mask"].values, values)
    np.testing.assert_allclose(got["cloud_fraction"].values, expected_fraction(values), rtol=1e-6)


def test_resume_after_interruption_threads(tmp_path):
    _interrupt_then_resume(tmp_path, "threads")


@pytest.mark.slow
def test_resume_after_interruption_multiprocess_localcluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        _interrupt_then_resume(tmp_path, client)


def test_default_distributed_client_is_used(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    values = _values((2, 32, 64))
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0"
    ) as client:
        # scheduler=None: the default Client; progress on distributed = the dashboard link
        report = to_zarr(make_mask(values), tmp_path / "m.zarr", progress=True)
        link = client.dashboard_link
    assert report.chunks_written == 4
    assert link in capsys.readouterr().out
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "m.zarr")["cloud_mask"].values, values)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"values": _values((3, 64, 80))[:, :32]}, "shape"),
        ({"chunks": (1, 16, 16)}, "chunks"),
        ({"model_version": "2.0"}, "model_version"),
        ({"shift_x": 30.0}, "coordinate 'x'"),
        ({"crs": "EPSG:32619"}, "CRS"),
        ({"input_bands": "B04 B08 B11"}, "input_bands"),
        ({"inference": "window 256 overlap 64 blend cosine; model grid 2x coarser"}, "inference"),
    ],
)
def test_resume_refuses_a_different_grid(tmp_path, change, expected):
    values = _values((3, 64, 80))
    store = tmp_path / "mask.zarr"
    settings = {"input_bands": "B04 B08", "inference": "window 256 overlap 64 blend cosine"}
    to_zarr(make_mask(values).assign_attrs(settings), store)
    other = make_mask(
        change.get("values", values),
        change.get("chunks", (1, 32, 32)),
        model_version=change.get("model_version", "1.0"),
    ).assign_attrs({k: change.get(k, v) for k, v in settings.items()})
    if "shift_x" in change:
        other = other.assign_coords(x=other.x + change["shift_x"])
    if "crs" in change:
        other = other.rio.write_crs(change["crs"])
    with pytest.raises(ResumeMismatchError, match=expected) as err:
        to_zarr(other, store, resume=True)
    assert "overwrite=True" in str(err.value)


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_resume_of_a_store_written_before_the_inference_check(tmp_path):
    """Stores whose metadata predate ``input_bands`` / ``inference`` still resume."""
    values = _values((2, 32, 64))
    store = tmp_path / "old.zarr"
    to_zarr(make_mask(values), store)
    group = zarr.open_group(store, mode="r+")
    meta = dict(group.attrs["xsensei_store"])
    del meta["input_bands"], meta["inference"]
    group.attrs["xsensei_store"] = meta
    zarr.consolidate_metadata(store)
    mask = make_mask(values).assign_attrs(inference="window 256 overlap 64 blend cosine")
    report = to_zarr(mask, store, resume=True)
    assert report.chunks_written == 0 and report.chunks_skipped == 4


def test_resume_refuses_a_store_not_written_by_xsensei(tmp_path):
    values = _values((1, 32, 32))
    store = tmp_path / "foreign.zarr"
    make_mask(values).to_dataset().drop_attrs(deep=False).to_zarr(store, consolidated=False)
    with pytest.raises(ResumeMismatchError, match="not written by xsensei"):
        to_zarr(make_mask(values), store, resume=True)


def test_irregular_dask_chunks_are_rechunked_to_a_regular_zarr_grid(tmp_path):
    values = _values((2, 50, 70), seed=2)
    mask = make_mask(values, ((1, 1), (20, 10, 20), (30, 30, 10)))
    store = tmp_path / "m.zarr"
    report = to_zarr(mask, store)
    arr = zarr.open_array(store, path="cloud_mask", mode="r")
    assert arr.chunks == (1, 20, 30)
    assert report.chunks_total == 2 * 3 * 3
    np.testing.assert_array_equal(arr[...], values)
    # the same irregular mask resumes onto the same grid
    assert to_zarr(mask, store, resume=True).chunks_skipped == 18


def test_all_nodata_chunks_count_as_done(tmp_path):
    values = _values((2, 64, 64), seed=4)
    values[0, :32, :32] = 255  # a chunk equal to the fill value: zarr does not store it
    values[1] = 255  # a whole time step without valid pixels
    log = tmp_path / "log"
    log.mkdir()
    store = tmp_path / "m.zarr"
    to_zarr(make_mask(values), store)
    assert not (store / "cloud_mask" / "c" / "0" / "0" / "0").exists()
    assert len(done_blocks(store)) == 8

    report = to_zarr(make_mask(values, block_fn=counting_model(log)), store, resume=True)
    assert (report.chunks_written, report.chunks_skipped) == (0, 8)
    assert computed_blocks(log) == []
    ds = xr.open_zarr(store)
    np.testing.assert_array_equal(ds["cloud_mask"].values, values)
    fraction = ds["cloud_fraction"].values
    assert fraction[0] == pytest.approx(expected_fraction(values)[0])
    assert np.isnan(fraction[1])


def test_numpy_mask_without_time_and_probability_output(tmp_path):
    values = _values((1, 40, 40))[0]
    template = _template((1, 40, 40)).isel(time=0)
    mask = wrap_output(
        values, template, kind="mask", classes=CLASSES, model_name="m", model_version="1"
    )
    report = to_zarr(mask, tmp_path / "m.zarr")
    assert report.chunks_total == 1
    ds = xr.open_zarr(tmp_path / "m.zarr", decode_coords="all")
    assert ds["cloud_mask"].dtype == np.uint8 and "cloud_fraction" not in ds
    assert ds["cloud_mask"].rio.crs == template.rio.crs

    prob = np.random.default_rng(0).random((3, 3, 40, 40), dtype=np.float32)
    prob[:, :, :5] = np.nan
    probability = wrap_output(
        da.from_array(prob, chunks=(1, 3, 20, 20)),
        _template((3, 40, 40)),
        kind="probability",
        classes=["clear", "cloud", "cloud_shadow"],
        model_name="m",
        model_version="1",
    )
    to_zarr(probability, tmp_path / "p.zarr")
    got = xr.open_zarr(tmp_path / "p.zarr", decode_coords="all")["cloud_probability"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.values, prob)
    assert list(got["class"].values) == ["clear", "cloud", "cloud_shadow"]
    assert np.isnan(got.rio.nodata)


def test_progress_bar(tmp_path, capsys):
    to_zarr(make_mask(_values((1, 32, 32))), tmp_path / "m.zarr", progress=True)
    assert "m.zarr" in capsys.readouterr().err


def test_cloud_fraction_along_a_leading_dim_not_named_time(tmp_path):
    values = _values((2, 32, 32), seed=5)
    mask = make_mask(values, (1, 16, 16)).rename(time="date")
    to_zarr(mask, tmp_path / "m.zarr")
    ds = xr.open_zarr(tmp_path / "m.zarr", decode_coords="all")
    assert ds["cloud_fraction"].dims == ("date",)
    np.testing.assert_allclose(ds["cloud_fraction"].values, expected_fraction(values), rtol=1e-6)


def _on_worker(log: str):
    def mark(block, block_id=None):
        from distributed import get_worker

        Path(log, f"{get_worker().name}@{block_id}").touch()
        return np.zeros(block.shape, np.uint8)

    return mark


def test_annotated_tasks_wait_for_a_worker_with_the_resource(tmp_path):
    """docs/guide/dask.md's mixed cluster: tasks made under dask.annotate(resources={"GPU":
    1}) must not run on a worker without that resource (graph optimisation used to drop the
    restriction); they run once a GPU worker joins."""
    import threading

    import dask
    from distributed import Client, LocalCluster, Worker

    log = tmp_path / "log"
    log.mkdir()
    x = da.zeros((64, 64), chunks=32)
    with dask.annotate(resources={"GPU": 1}):
        data = x.map_blocks(_on_worker(str(log)), dtype=np.uint8)
    mask = xr.DataArray(data, dims=("y", "x"), name="cloud_mask",
                        coords={"y": 90.0 - np.arange(64.0), "x": np.arange(64.0)})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result: dict[str, object] = {}
        job = threading.Thread(target=lambda: result.update(
            report=to_zarr(mask, tmp_path / "m.zarr", scheduler=client, progress=False)))
        job.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not client.run_on_scheduler(
                lambda dask_scheduler: any(ts.state == "no-worker"
                                           for ts in dask_scheduler.tasks.values())):
            time.sleep(0.05)
        time.sleep(0.5)
        assert list(log.iterdir()) == []  # the CPU worker took none of them
        cluster.worker_spec["gpu"] = {"cls": Worker,
                                      "options": {"nthreads": 1, "resources": {"GPU": 1}}}
        cluster.sync(cluster._correct_state)
        job.join(60)
    assert result["report"].chunks_written == 4
    assert sorted(p.name.split("@")[0] for p in log.iterdir()) == ["gpu"] * 4
