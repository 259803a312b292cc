"""STAC -> zarr jobs that lose a worker, lose their client, or meet a broken asset / a dead API.

Every job writes the eo-learn Sentinel-2 scenes (5 dates, 101 x 100 px) in 16 or 32 px chunks
(245 or 80 chunks) through the real local STAC API; each result is compared with the accessor's
mask of the same files computed directly (uninterrupted).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from stac_fixtures import (
    FAULTY,
    S2_10,
    StacEnv,
    direct_mask,
    done_count,
    needs_data,
    one_torch_thread,
    stac_env,
)

from xsensei.io.stac import StacApiError, StacAssetError
from xsensei.stac_job import main as stac_main
from xsensei.stac_job import stac_to_zarr

pytestmark = [needs_data, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
CHUNKS = 16
TOTAL = 5 * 7 * 7  # time x ceil(101 / 16) x ceil(100 / 16)
KILL_CHUNKS, KILL_TOTAL = 32, 5 * 4 * 4


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> StacEnv:
    return stac_env(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(env: StacEnv) -> np.ndarray:
    """The uninterrupted result: the accessor on the same COGs (the faulty collection's files
    are copies of these)."""
    return direct_mask(env.catalog, S2_10, env.model)


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def _mask(store: Path) -> np.ndarray:
    return np.asarray(xr.open_zarr(store, decode_coords="all")["cloud_mask"].values)


def _fraction_ok(store: Path, mask: np.ndarray) -> None:
    valid = mask != 255
    expected = (np.isin(mask, (1, 2)) & valid).sum((1, 2)) / np.maximum(valid.sum((1, 2)), 1)
    got = xr.open_zarr(store)["cloud_fraction"].values
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def _subprocess_env() -> dict[str, str]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def test_worker_killed_mid_job_completes_identically(
    env: StacEnv, client: Any, reference: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "cube.zarr"
    result: dict[str, Any] = {}

    def job() -> None:
        try:
            result["report"] = stac_to_zarr(out, api=env.url, collection=S2_10, model=env.model,
                                            chunks=KILL_CHUNKS, scheduler=client, progress=False)
        except BaseException as err:  # reported below
            result["error"] = err

    pids = client.run(os.getpid)
    thread = threading.Thread(target=job)
    thread.start()
    _wait_for(lambda: done_count(out) >= 8 or not thread.is_alive(), 180, "8 chunks done")
    at_kill = done_count(out)
    victim = pids[sorted(pids)[0]]
    os.kill(victim, signal.SIGKILL)
    thread.join(300)
    assert not thread.is_alive()
    assert "error" not in result, repr(result.get("error"))
    assert at_kill < KILL_TOTAL, "the job finished before the worker was killed"
    report = result["report"]
    assert report.chunks_total == KILL_TOTAL and report.chunks_written == KILL_TOTAL
    assert done_count(out) == KILL_TOTAL
    assert victim not in client.run(os.getpid).values()  # it really died (and was replaced)
    mask = _mask(out)
    np.testing.assert_array_equal(mask, reference)
    _fraction_ok(out, mask)


def test_client_killed_then_resume_computes_only_the_missing_chunks(
    env: StacEnv, client: Any, reference: np.ndarray, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cube.zarr"
    args = ["--api", env.url, "--collection", S2_10, "--out", str(out), "--model",
            str(env.model), "--chunks", str(CHUNKS), "--torch-threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "xsensei.stac_job", *args, "--quiet"],
                            env=_subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: done_count(out) >= 20 or proc.poll() is not None, 240,
                  "20 chunks done by the CLI")
    finally:
        proc.kill()
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"the job ended on its own:\n{output}"
    done = done_count(out)
    assert 0 < done < TOTAL

    assert stac_main([*args, "--resume", "--quiet", "--scheduler", client.scheduler.address]) == 0
    line = capsys.readouterr().out
    assert f"{TOTAL - done} chunks written, {done} already done" in line, line
    assert done_count(out) == TOTAL
    mask = _mask(out)
    np.testing.assert_array_equal(mask, reference)
    _fraction_ok(out, mask)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_broken_asset_and_dead_api_name_the_culprit_and_keep_the_chunks(
    env: StacEnv, client: Any, reference: np.ndarray, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job stopped by Ctrl-C keeps its chunks; one 16 px tile of one asset is garbage: the
    resumed job fails on the chunk that reads it, naming the item and asset, and keeps every
    chunk written before; a dead API changes nothing; once the file is repaired a resume writes
    only the rest.

    The Ctrl-C comes first so that chunks are surely stored before the broken tile is met: Dask
    may schedule the chunks that read that tile first of all. It comes after 4 chunks, well
    before the 9 that read the tile (its chunk and, through the halo, the 8 around) are done.
    """
    out = tmp_path / "cube.zarr"
    args = ["--api", env.url, "--collection", FAULTY, "--out", str(out), "--model",
            str(env.model), "--chunks", str(CHUNKS), "--torch-threads", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "xsensei.stac_job", *args],
                            env=_subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: done_count(out) >= 4 or proc.poll() is not None, 240,
                  "4 chunks done by the CLI")
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    interrupted = done_count(out)
    assert proc.returncode == 130, stderr
    assert 4 <= interrupted < TOTAL
    assert stderr.startswith("xsensei stac: interrupted"), stderr
    assert f"{interrupted} of {TOTAL} chunks" in stderr and "--resume" in stderr, stderr
    assert "Traceback" not in stderr, stderr

    item = env.catalog.items[FAULTY][-1]
    victim = env.catalog.asset_path(FAULTY, item, "B05")
    good = victim.read_bytes()
    with rasterio.open(victim) as src:
        start = int(src.get_tag_item("BLOCK_OFFSET_3_3", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_3_3", "TIFF", bidx=1))
    victim.write_bytes(good[:start] + b"\xff" * size + good[start + size:])
    try:
        # in-process threads: this process never reads these files again (GDAL caches them)
        with one_torch_thread(), pytest.raises(StacAssetError) as info:
            stac_to_zarr(out, api=env.url, collection=FAULTY, model=env.model, chunks=CHUNKS,
                         scheduler="threads", torch_threads=1, progress=False, resume=True)
    finally:
        victim.write_bytes(good)
    err = info.value
    assert (err.item, err.asset) == (item, "B05")
    assert f"asset 'B05' of item '{item}'" in str(err)
    assert any("resume=True" in note for note in getattr(err, "__notes__", []))
    done = done_count(out)
    assert interrupted <= done < TOTAL, "the chunks written before the failure must stay recorded"
    with pytest.raises(FileExistsError, match="resume=True"):
        stac_to_zarr(out, api=env.url, collection=FAULTY, model=env.model, chunks=CHUNKS)

    dead = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(StacApiError, match=f"cannot reach the STAC API at {dead}"):
        stac_to_zarr(out, api=dead, collection=FAULTY, model=env.model, chunks=CHUNKS,
                     resume=True, progress=False)
    rc = stac_main(["--api", dead, "--collection", FAULTY, "--out", str(out), "--model",
                    str(env.model), "--chunks", str(CHUNKS), "--resume", "--quiet"])
    assert rc == 2 and dead in capsys.readouterr().err
    assert done_count(out) == done  # nothing touched

    # the asset repaired: resume on fresh worker processes finishes only what is missing
    report = stac_to_zarr(out, api=env.url, collection=FAULTY, model=env.model, chunks=CHUNKS,
                          resume=True, scheduler=client, progress=False)
    assert (report.chunks_skipped, report.chunks_written) == (done, TOTAL - done)
    mask = _mask(out)
    np.testing.assert_array_equal(mask, reference)
    _fraction_ok(out, mask)
