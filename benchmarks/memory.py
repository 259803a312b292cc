"""Memory: peak RSS of a streamed zarr -> zarr cloud-mask job at growing scene sizes.

``python -m benchmarks.memory [--sizes 2048 4096 8192] [--chunk 1024] [--model NAME_OR_PATH]
[--workers N] [--threads T] [--workdir DIR] [--keep] [--quick]``

For each size, a first subprocess writes a 6-band float32 Sentinel-2 scene to a zarr store,
chunk by chunk (demo-scene tiles generated inside Dask tasks, so the writer never holds the
scene). Then a *fresh* subprocess runs what a user would write::

    arr = xr.open_zarr(store)["reflectance"]          # lazy, chunks as stored
    mask = arr.sensei.cloudmask(descriptors, model=...)
    xsensei.to_zarr(mask, out)                         # one Dask task per chunk

and reports its own peak resident set size (``VmHWM``, the kernel's exact high-water mark of
the job's address space; ``ru_maxrss`` would also count the forked parent) and the RSS right
before computing (imports, graph). The parent also polls the
job's RSS (psutil, every 0.05 s) as a cross-check. Targets: peak <= 2 GB (2000 MB) at every
size, and peak(8192^2) / peak(2048^2) <= 1.3 (a streamed job's memory must not grow with the
scene). The job uses the threaded scheduler with ``--workers`` tasks at once (default: all
cores), each with ``--threads`` torch threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _common as C  # sets OMP_WAIT_POLICY; torch loads later, lazily

TARGET_PEAK_MB = 2000.0
TARGET_RATIO = 1.3


def _rss_mb() -> float:
    """Current RSS of this process (MB = 1e6 bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")  # pragma: no cover


def _peak_mb() -> float:
    """Peak RSS of this process image so far: ``VmHWM`` (the kernel's high-water mark of this
    address space). Not ``ru_maxrss``: on Linux that also keeps the peak of the image that
    exec replaced, i.e. of the (v)forked parent, which would put the benchmark's own size
    into every job's figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # pragma: no cover


# =============================================================================================
# subprocess 1: write the input store, streamed


def make_input(path: str, size: int, chunk: int, nbands: int, workers: int) -> dict[str, Any]:
    import dask
    import dask.array as da
    import xarray as xr

    bands = C.s2_bands(nbands)
    nblocks = -(-size // chunk)

    def block(block_id: tuple[int, int, int]) -> np.ndarray:
        _, iy, ix = block_id
        h, w = min(chunk, size - iy * chunk), min(chunk, size - ix * chunk)
        return C.demo_tile(h, w, seed=iy * nblocks + ix, bands=bands)

    ychunks = tuple(min(chunk, size - i * chunk) for i in range(nblocks))
    data = da.map_blocks(block, dtype=np.float32, chunks=((bands.n,), ychunks, ychunks),
                         meta=np.empty((0, 0, 0), np.float32))
    res = 30.0
    arr = xr.DataArray(
        data, dims=("band", "y", "x"), name="reflectance",
        coords={"band": list(bands.names),
                "y": 5_200_000.0 - res * (np.arange(size) + 0.5),
                "x": 500_000.0 + res * (np.arange(size) + 0.5)},
        attrs={"description": "synthetic Sentinel-2 TOA reflectance (xsensei benchmark)"},
    )
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=workers):
        arr.to_dataset().to_zarr(path, mode="w", zarr_format=3, consolidated=False,
                                 encoding={"reflectance": {"chunks": (bands.n, chunk, chunk)}})
    return {"wall_s": time.perf_counter() - start, "peak_rss_mb": _peak_mb()}


# =============================================================================================
# subprocess 2: the masking job


def run_job(src: str, dst: str, model: str, nbands: int, workers: int, threads: int
            ) -> dict[str, Any]:
    rss_start = _rss_mb()
    import dask
    import xarray as xr

    import xsensei  # noqa: F401  (registers .sensei)
    from xsensei.io.zarr import to_zarr

    bands = C.s2_bands(nbands)
    arr = xr.open_zarr(src, consolidated=False)["reflectance"]
    mask = arr.sensei.cloudmask(bands.descriptors, model=model, torch_threads=threads)
    rss_graph = _rss_mb()
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=workers):
        report = to_zarr(mask, dst, overwrite=True)
    wall = time.perf_counter() - start
    return {"rss_start_mb": rss_start, "rss_before_compute_mb": rss_graph,
            "peak_rss_mb": _peak_mb(), "wall_s": wall, "chunks": report.chunks_total,
            "input_chunks": [int(max(c)) for c in arr.chunks],
            "mask_chunks": [int(max(c)) for c in mask.chunks]}


# =============================================================================================
# parent


def _subprocess(args: list[str], poll: bool) -> tuple[dict[str, Any], float | None]:
    """Run ``python -m benchmarks.memory <args>``; its JSON result and the polled peak (MB)."""
    import psutil

    cmd = [sys.executable, "-m", "benchmarks.memory", *args]
    proc = subprocess.Popen(cmd, cwd=C.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    polled = 0.0
    if poll:
        ps = psutil.Process(proc.pid)
        started = False
        while proc.poll() is None:
            try:
                # until exec, the child is a copy of this process: not the job's memory
                started = started or args[0] in ps.cmdline()
                if not started:
                    continue
                rss = ps.memory_info().rss + sum(
                    c.memory_info().rss for c in ps.children(recursive=True))
                polled = max(polled, rss / 1e6)
            except psutil.Error:
                pass
            finally:
                time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-4000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]), (polled if poll else None)


def measure(args: argparse.Namespace, model: C.ModelChoice, workdir: Path
            ) -> list[dict[str, Any]]:
    rows = []
    for size in args.sizes:
        src, dst = workdir / f"input-{size}.zarr", workdir / f"mask-{size}.zarr"
        print(f"-- {size}^2 px x {args.bands} bands: writing the input store "
              f"(chunks {args.chunk})", flush=True)
        made, _ = _subprocess(["_make-input", str(src), str(size), str(args.chunk),
                               str(args.bands), str(args.workers)], poll=False)
        print(f"   input written in {made['wall_s']:.1f} s (writer peak "
              f"{made['peak_rss_mb']:.0f} MB); masking in a fresh process", flush=True)
        load0 = C.loadavg()
        job, polled = _subprocess(["_job", str(src), str(dst), model.ref, str(args.bands),
                                   str(args.workers), str(args.threads)], poll=True)
        print(f"   peak RSS {job['peak_rss_mb']:.0f} MB (polled {polled:.0f} MB), "
              f"{job['wall_s']:.1f} s", flush=True)
        rows.append({"size": size, "bands": args.bands, "chunk": args.chunk,
                     "input_gb": args.bands * size * size * 4 / 1e9,
                     "peak_rss_mb": job["peak_rss_mb"], "polled_peak_rss_mb": polled,
                     "rss_before_compute_mb": job["rss_before_compute_mb"],
                     "rss_start_mb": job["rss_start_mb"], "wall_s": job["wall_s"],
                     "ms_per_mp": 1000 * job["wall_s"] / (size * size / 1e6),
                     "mask_chunks": job["mask_chunks"], "tasks": job["chunks"],
                     "input_writer": made, "loadavg_before": load0,
                     "loadavg_after": C.loadavg()})
        if not args.keep:
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(dst, ignore_errors=True)
    return rows


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    peaks = {r["size"]: r["peak_rss_mb"] for r in rows}
    out = [{"target": "peak_rss_mb", "text": "peak RSS <= 2 GB (2000 MB) at every size",
            "pass": all(v <= TARGET_PEAK_MB for v in peaks.values()) if peaks else None,
            "measured": peaks,
            "shown": ", ".join(f"{s}^2 {v:.0f} MB" for s, v in peaks.items())}]
    lo, hi = min(peaks, default=None), max(peaks, default=None)
    ratio = peaks[hi] / peaks[lo] if lo is not None and hi != lo else None
    text = "peak RSS 8192^2 / 2048^2 <= 1.3"
    if (lo, hi) != (2048, 8192):
        text += f" (measured as {hi}^2 / {lo}^2: other sizes than the target's)"
    out.append({"target": "rss_ratio", "text": text, "largest": hi, "smallest": lo,
                "pass": None if ratio is None else ratio <= TARGET_RATIO, "measured": ratio,
                "shown": "not measured" if ratio is None else f"{ratio:.2f}"})
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_make-input":
        path, size, chunk, nbands, workers = argv[1:6]
        print(json.dumps(make_input(path, int(size), int(chunk), int(nbands), int(workers))))
        return 0
    if argv and argv[0] == "_job":
        src, dst, model, nbands, workers, threads = argv[1:7]
        print(json.dumps(run_job(src, dst, model, int(nbands), int(workers), int(threads))))
        return 0

    p = C.arg_parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--quick", action="store_true", help="1024^2 and 2048^2 only")
    p.add_argument("--chunk", type=int, default=1024, help="input zarr chunk side (1024)")
    p.add_argument("--bands", type=int, default=6, choices=[6, 13])
    p.add_argument("--model", default=None,
                   help="packaged name or checkpoint path (default: the packaged default "
                        "model, else an untrained stand-in of the same architecture)")
    p.add_argument("--workers", type=int, default=C.cpu_count(),
                   help="Dask threaded-scheduler workers (default: all cores)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per task (default 1)")
    p.add_argument("--workdir", default=None, help="where the stores go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the zarr stores")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [1024, 2048]

    machine = C.machine_info("cpu")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="xsensei-mem-"))
    workdir.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(workdir).free / 1e9
    need_gb = 1.2 * args.bands * max(args.sizes) ** 2 * 4 / 1e9
    if free_gb < need_gb:
        p.error(f"{workdir} has {free_gb:.1f} GB free; the largest input needs ~{need_gb:.1f} GB")
    try:
        model = C.choose_model("default", args.model, workdir)
        print(f"machine: {machine['cpu']}, {machine['cpus_usable']} usable cores, load "
              f"{machine['loadavg_start']}; job: threaded scheduler, {args.workers} worker(s) x "
              f"{args.threads} torch thread(s); stores in {workdir}")
        print(f"model: {model.label()} ({model.segmenter}, {model.source})")
        note = C.models_note([model])
        if note:
            print(note + "; memory does not depend on training")
        rows = measure(args, model, workdir)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    machine["loadavg_end"] = C.loadavg()

    head = (f"{'scene':<14} {'input':>8} {'peak RSS':>10} {'polled':>8} {'before':>8} "
            f"{'wall':>8} {'ms/MP':>8}  chunks")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['size']}^2 x {r['bands']}b".ljust(14)
              + f" {r['input_gb']:>6.2f}GB {r['peak_rss_mb']:>8.0f}MB "
              f"{C.fmt(r['polled_peak_rss_mb'], '.0f'):>6}MB {r['rss_before_compute_mb']:>6.0f}MB "
              f"{r['wall_s']:>7.1f}s {r['ms_per_mp']:>8.0f}  {r['tasks']} x {r['chunk']}^2")
    print("(peak RSS: the job's own VmHWM; polled: psutil every 0.05 s; before: RSS after "
          "imports and graph, before computing)\n")
    checks = targets(rows)
    C.print_targets(checks)
    payload = {"benchmark": "memory",
               "settings": {k: v for k, v in vars(args).items() if k not in ("out", "workdir")},
               "machine": machine, "model": vars(model), "models_note": note,
               "job": "xr.open_zarr -> DataArray.sensei.cloudmask(descriptors, model) -> "
                      "xsensei.to_zarr, threaded scheduler",
               "rows": rows, "targets": checks}
    return C.save_results("memory", payload, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
