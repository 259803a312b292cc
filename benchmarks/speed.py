"""Speed: milliseconds per megapixel at native resolution, xsensei vs its peers, one run.

``python -m benchmarks.speed [--sizes 1024 2048 4096] [--bands 6 13] [--repeats 3] [--quick]
[--device cpu|cuda] [--threads N] [--dask-chunk 2048] [--dask-workers 1] [--model NAME_OR_PATH]
[--fast-model NAME_OR_PATH] [--methods numpy,dask,fast,bare,ukis,s2cloudless]``

Methods, each on the same synthetic Sentinel-2 scene (demo-scene tiles, 0-1 TOA reflectance):

(a) ``numpy``: the default model (SEnSeI + DeepLabv3+) through ``xsensei.cloudmask(array,
    descriptors)``.
(b) ``dask``: the same model through ``DataArray.sensei.cloudmask()`` on a Dask-chunked array
    (``--dask-chunk``), computed with the threaded scheduler (``--dask-workers``). Chunks carry a
    halo of one window, so windows on chunk borders run twice: the price of exact chunk
    independence.
(c) ``fast``: the per-pixel model (SEnSeI + PixelNet) through the numpy API.
(d) ``bare``: the default model's segmenter *without SEnSeI*: the engine (same windows, blending,
    batches, threads) runs a module whose band-specialised form is a fixed random
    ``Conv2d(N, 64, 1)`` followed by the same DeepLabv3+. That is the cheapest way any N-band
    input can reach a 64-channel segmenter, so (a) - (d) is exactly what SEnSeI costs at
    inference: its descriptor network runs once per band set (cached per process and reported
    separately as ``sensei_fold_ms``), and the folded SEnSeI *is* a 1x1 convolution.
(e) ``ukis``: ukis-csmask (ONNX, UNet / EfficientNet-B4, its 6-band model; on 13-band scenes it
    picks its six bands itself). Its API builds an ONNX session per call, which is timed.
(f) ``s2cloudless``: LightGBM per pixel, 13-band scenes only (its package defaults).

Timing: every method runs once untimed (warm-up, on a ``--warmup-size`` crop), then
``--repeats`` rounds in rotating order; the median counts. Ratios compare methods measured in the
same rounds, which is what survives a shared, noisy machine. Threads: torch intra-op threads are
set explicitly (``--threads``, default all usable cores) for (a), (c), (d); Dask runs
``--dask-workers`` tasks at once with ``threads // workers`` torch threads each (default one task
with all threads: the same compute as numpy, so (b) vs (a) is the Dask path's own cost); the
peers get the same thread count (ONNX intra-op threads, LightGBM ``num_threads``).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks import _common as C  # sets OMP_WAIT_POLICY; torch loads later, lazily

METHODS = ("numpy", "dask", "fast", "bare", "ukis", "s2cloudless")
LABELS = {
    "numpy": "(a) default, numpy API",
    "dask": "(b) default, Dask (.sensei)",
    "fast": "(c) fast pixel model",
    "bare": "(d) bare segmenter",
    "ukis": "(e) ukis-csmask",
    "s2cloudless": "(f) s2cloudless",
}
TARGETS = {
    "default_vs_ukis": 3.0,  # x faster per MP
    "fast_vs_ukis": 30.0,
    "sensei_overhead_pct": 2.0,
    "dask_vs_numpy_pct": 15.0,
}

Runner = Callable[[NDArray[np.float32]], NDArray[Any]]


# =============================================================================================
# the bare segmenter


def bare_runner(default_ref: str, bands: C.BandSet, args: argparse.Namespace) -> Runner:
    """(d): the engine's numpy path with the default model's DeepLabv3+ behind a fixed random
    1x1 convolution instead of SEnSeI; same window spec, batch size, device and threads."""
    import torch
    from torch import nn

    from xsensei.api import LoadedModel, Preparer, _task, resolve_model, window_spec
    from xsensei.engine import runtime
    from xsensei.engine.dask import predict_numpy
    from xsensei.weights.checkpoint import load_model

    class BareSegmenter(nn.Module):
        def __init__(self, segmenter: nn.Module, channels: int) -> None:
            super().__init__()
            self.segmenter = segmenter
            self.channels = channels

        def for_bands(self, descriptors: torch.Tensor) -> nn.Module:
            gen = torch.Generator().manual_seed(1234)
            conv = nn.Conv2d(descriptors.shape[0], self.channels, 1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
                conv.bias.zero_()
            return nn.Sequential(conv.to(descriptors.device), self.segmenter).eval()

    loaded = resolve_model(default_ref)
    model = load_model(default_ref)
    bare = BareSegmenter(model.segmenter, model.sensei.out_channels)
    bare_loaded = LoadedModel(runtime.register_memory_model(bare), loaded.classes,
                              loaded.inference, loaded.segmenter)
    spec = window_spec(loaded, None, None, "cosine")
    task = _task(bare_loaded, bands.descriptors, "mask", Preparer(), spec, device=args.device,
                 precision=args.precision, batch_size=args.batch_size, partial="fill",
                 torch_threads=args.threads)
    return lambda values: predict_numpy(values, task)


def sensei_fold_ms(ref: str, bands: C.BandSet, device: str, repeats: int = 5) -> float:
    """What SEnSeI costs once per band set: the descriptor network folded into a 1x1 conv."""
    import torch

    from xsensei.descriptors import encode_wavelengths
    from xsensei.engine import runtime
    from xsensei.weights.checkpoint import load_model

    dev = runtime.resolve_device(device)
    model = load_model(ref, device=dev)
    desc = torch.as_tensor(encode_wavelengths(bands.descriptors), device=dev)
    model.for_bands(desc)
    times = [C.timed(lambda: model.for_bands(desc))[0] for _ in range(repeats)]
    return 1000 * C.median(times)


# =============================================================================================
# runners


def make_runners(args: argparse.Namespace, models: dict[str, C.ModelChoice], bands: C.BandSet,
                 peers: dict[str, dict[str, Any]]) -> dict[str, Runner | str]:
    """A callable per method, or the reason it is skipped for this band set."""
    import dask
    import dask.array as da
    import xarray as xr

    from xsensei.api import cloudmask

    threads, workers = args.threads, args.dask_workers
    opts = {"device": args.device, "batch_size": args.batch_size, "precision": args.precision}
    out: dict[str, Runner | str] = {}
    for method in args.methods:
        if method == "numpy":
            out[method] = lambda v: cloudmask(v, bands.descriptors, model=models["default"].ref,
                                              torch_threads=threads, **opts)
        elif method == "fast":
            out[method] = lambda v: cloudmask(v, bands.descriptors, model=models["fast"].ref,
                                              torch_threads=threads, **opts)
        elif method == "dask":
            def run_dask(v: NDArray[np.float32]) -> NDArray[np.uint8]:
                chunk = args.dask_chunk
                arr = xr.DataArray(da.from_array(v, chunks=(-1, chunk, chunk)),
                                   dims=("band", "y", "x"), coords={"band": list(bands.names)})
                mask = arr.sensei.cloudmask(bands.descriptors, model=models["default"].ref,
                                            torch_threads=max(1, threads // workers), **opts)
                with dask.config.set(scheduler="threads", num_workers=workers):
                    return np.asarray(mask.values)

            out[method] = run_dask
        elif method == "bare":
            out[method] = bare_runner(models["default"].ref, bands, args)
        elif method == "ukis":
            if not peers["ukis-csmask"]["available"]:
                out[method] = peers["ukis-csmask"]["reason"]
            elif isinstance(reason := C.ukis_band_order(bands.common), str):
                out[method] = reason
            else:
                out[method] = lambda v: C.run_ukis(v, bands.common, threads, args.device)[0]
        elif method == "s2cloudless":
            if not peers["s2cloudless"]["available"]:
                out[method] = peers["s2cloudless"]["reason"]
            elif bands.n != 13:
                out[method] = "s2cloudless needs all 13 Sentinel-2 L1C bands (or its 10)"
            else:
                out[method] = lambda v: C.run_s2cloudless(v, threads)
    return out


def cloud_fraction(method: str, mask: NDArray[Any]) -> float:
    """Share of pixels called cloud (a sanity check that every method really produced a mask)."""
    mask = np.asarray(mask)
    cloud = (mask == 1) if method in ("ukis", "s2cloudless") else np.isin(mask, (1, 2))
    valid = mask != 255
    return float(cloud.sum() / max(int(valid.sum()), 1))


# =============================================================================================
# measurement


def measure(args: argparse.Namespace, models: dict[str, C.ModelChoice],
            peers: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    configs: dict[str, Any] = {}
    for nb in args.bands:
        bands = C.s2_bands(nb)
        runners = make_runners(args, models, bands, peers)
        fold = sensei_fold_ms(models["default"].ref, bands, args.device)
        session = (C.ukis_session_ms(bands.common, args.threads, args.device)
                   if callable(runners.get("ukis")) else None)
        for size in args.sizes:
            mp = size * size / 1e6
            key = f"{size}x{nb}"
            print(f"-- {size}^2 px, {nb} bands: generating the scene", flush=True)
            values = C.synthetic_scene(size, bands, seed=size)
            warm = min(size, args.warmup_size)
            active = {m: r for m, r in runners.items() if callable(r)}
            load0 = C.loadavg()
            for method, run in active.items():
                crop = np.ascontiguousarray(values[:, :warm, :warm])
                t, _ = C.timed(partial(run, crop))
                print(f"   warm-up {method:<12} {t:7.2f} s ({warm}^2 px)", flush=True)
            times: dict[str, list[float]] = {m: [] for m in active}
            fractions: dict[str, float] = {}
            order = list(active)
            for rep in range(args.repeats):
                shift = rep % max(len(order), 1)
                for method in order[shift:] + order[:shift]:
                    t, mask = C.timed(partial(active[method], values))
                    times[method].append(t)
                    fractions[method] = cloud_fraction(method, mask)
                    print(f"   round {rep + 1}/{args.repeats} {method:<12} {t:8.2f} s "
                          f"({1000 * t / mp:9.1f} ms/MP)", flush=True)
                    del mask
            for method in args.methods:
                run = runners[method]
                row: dict[str, Any] = {"size": size, "bands": nb, "megapixels": mp,
                                       "method": method, "label": LABELS[method]}
                if not callable(run):
                    row["skipped"] = run
                else:
                    med = C.median(times[method])
                    row.update(times_s=times[method], median_s=med,
                               ms_per_mp=1000 * med / mp,
                               min_ms_per_mp=1000 * min(times[method]) / mp,
                               cloud_fraction=fractions.get(method))
                    if method == "dask":
                        row.update(dask_chunk=args.dask_chunk, dask_workers=args.dask_workers,
                                   torch_threads=max(1, args.threads // args.dask_workers))
                    elif method in ("numpy", "fast", "bare"):
                        row["torch_threads"] = args.threads
                    else:
                        row["threads"] = args.threads
                rows.append(row)
            values = crop = None  # free the scene before the next one is generated
            configs[key] = summarise(rows, size, nb)
            configs[key].update(sensei_fold_ms=fold, ukis_session_ms=session,
                                loadavg_before=load0,
                                loadavg_after=C.loadavg())
    return rows, configs


def _ms(rows: list[dict[str, Any]], size: int, nb: int, method: str) -> float | None:
    for r in rows:
        if r["size"] == size and r["bands"] == nb and r["method"] == method:
            return r.get("ms_per_mp")
    return None


def summarise(rows: list[dict[str, Any]], size: int, nb: int) -> dict[str, Any]:
    """The ratios of one (size, bands) configuration, from the same rounds."""
    ms = {m: _ms(rows, size, nb, m) for m in METHODS}
    ukis = ms["ukis"]
    out: dict[str, Any] = {"size": size, "bands": nb, "ms_per_mp": ms}
    out["speedup_vs_ukis"] = {m: (ukis / v if ukis and v else None) for m, v in ms.items()
                              if m != "ukis"}
    out["sensei_overhead_pct"] = (100 * (ms["numpy"] - ms["bare"]) / ms["bare"]
                                  if ms["numpy"] and ms["bare"] else None)
    out["dask_vs_numpy_pct"] = (100 * (ms["dask"] - ms["numpy"]) / ms["numpy"]
                                if ms["dask"] and ms["numpy"] else None)
    return out


def targets(configs: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS / MISS per target over every measured configuration (all must pass)."""
    checks = [
        ("default_vs_ukis", "default model >= 3x faster than ukis-csmask per MP",
         lambda c: c["speedup_vs_ukis"].get("numpy"), lambda v: v >= TARGETS["default_vs_ukis"],
         "{:.2f}x"),
        ("fast_vs_ukis", "fast pixel model >= 30x faster than ukis-csmask per MP",
         lambda c: c["speedup_vs_ukis"].get("fast"), lambda v: v >= TARGETS["fast_vs_ukis"],
         "{:.1f}x"),
        ("sensei_overhead_pct", "SEnSeI overhead over the bare segmenter <= 2 %",
         lambda c: c["sensei_overhead_pct"], lambda v: v <= TARGETS["sensei_overhead_pct"],
         "{:+.1f} %"),
        ("dask_vs_numpy_pct", "Dask path within 15 % of the numpy path",
         lambda c: c["dask_vs_numpy_pct"], lambda v: v <= TARGETS["dask_vs_numpy_pct"],
         "{:+.1f} %"),
    ]
    out = []
    for key, text, get, ok, spec in checks:
        measured = {k: get(c) for k, c in configs.items()}
        have = {k: v for k, v in measured.items() if v is not None}
        passed = all(ok(v) for v in have.values()) if have else None
        out.append({"target": key, "text": text, "pass": passed, "measured": measured,
                    "shown": ", ".join(f"{k} {spec.format(v)}" for k, v in have.items())
                    or "not measured"})
    return out


def print_table(rows: list[dict[str, Any]], configs: dict[str, Any]) -> None:
    head = (f"{'scene':<11} {'method':<30} {'ms/MP':>9} {'min':>9} {'x ukis':>8} "
            f"{'cloud%':>7}  note")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        key = f"{r['size']}x{r['bands']}"
        scene = f"{r['size']}^2 {r['bands']}b"
        if "skipped" in r:
            print(f"{scene:<11} {r['label']:<30} {'-':>9} {'-':>9} {'-':>8} {'-':>7}  "
                  f"skipped: {r['skipped']}")
            continue
        sp = configs[key]["speedup_vs_ukis"].get(r["method"])
        note = ""
        if r["method"] == "dask":
            note = (f"chunk {r['dask_chunk']}, {r['dask_workers']} worker(s) x "
                    f"{r['torch_threads']} thread(s)")
        frac = r.get("cloud_fraction")
        print(f"{scene:<11} {r['label']:<30} {r['ms_per_mp']:>9.1f} {r['min_ms_per_mp']:>9.1f} "
              f"{C.fmt(sp, '.2f'):>8} {C.fmt(None if frac is None else 100 * frac):>7}  {note}")
    print()
    for key, c in configs.items():
        print(f"{key.replace('x', '^2 px, ')} bands: SEnSeI overhead "
              f"{C.fmt(c['sensei_overhead_pct'], '+.1f')} % over the bare segmenter "
              f"(one-time fold {c['sensei_fold_ms']:.1f} ms per band set, not in ms/MP); "
              f"Dask vs numpy {C.fmt(c['dask_vs_numpy_pct'], '+.1f')} %"
              + ("" if c.get("ukis_session_ms") is None else
                 f"; ukis-csmask builds an ONNX session per call: {c['ukis_session_ms']:.0f} ms, "
                 "included in its time"))


def main(argv: list[str] | None = None) -> int:
    p = C.arg_parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096],
                   help="square scene sides in pixels (default: 1024 2048 4096)")
    p.add_argument("--bands", type=int, nargs="+", default=[6, 13], choices=[6, 13],
                   help="Sentinel-2 band counts: 6 (B02 B03 B04 B08 B11 B12) and/or 13")
    p.add_argument("--quick", action="store_true", help="512^2 scenes only")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median; default 3)")
    p.add_argument("--warmup-size", type=int, default=512,
                   help="side of the untimed warm-up crop (default 512)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=C.cpu_count(),
                   help="torch / ONNX / LightGBM threads (default: all usable cores)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per batch (API default 4)")
    p.add_argument("--precision", default="auto",
                   help="auto (API default: fp32 on CPU, bf16 autocast on CUDA), fp32, bf16, fp16")
    p.add_argument("--dask-chunk", type=int, default=2048, help="Dask chunk side (default 2048)")
    p.add_argument("--dask-workers", type=int, default=1,
                   help="threaded-scheduler workers; each gets threads // workers torch threads")
    p.add_argument("--model", default=None,
                   help="default model: packaged name or checkpoint path (default: packaged)")
    p.add_argument("--fast-model", default=None, help="per-pixel model: name or path")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [512]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"unknown methods {bad}; choose from {METHODS}")
    if args.threads < 1 or args.dask_workers < 1:
        p.error("--threads and --dask-workers must be >= 1")

    import torch

    torch.set_num_threads(args.threads)
    machine = C.machine_info(args.device)
    peers = C.peer_versions()
    with tempfile.TemporaryDirectory(prefix="xsensei-bench-") as tmp:
        models = {role: C.choose_model(role, arg, Path(tmp))
                  for role, arg in (("default", args.model), ("fast", args.fast_model))}
        print(f"machine: {machine['cpu']}, {machine['cpus_usable']} usable cores, torch "
              f"{machine['torch']}, {args.threads} thread(s), device {args.device}, load "
              f"{machine['loadavg_start']}")
        for m in models.values():
            print(f"model {m.role}: {m.label()} ({m.segmenter}, {m.source})")
        if peers["ukis-csmask"]["available"]:
            peers["ukis-csmask"]["providers_used"] = C.ukis_providers(args.device)
        for name, info in peers.items():
            print(f"peer {name}: " + (f"{info['version']}" if info["available"]
                                      else f"unavailable: {info['reason']}")
                  + (f" ({', '.join(info['providers_used'])})" if "providers_used" in info
                     else ""))
        if args.device != "cpu":
            print("NOTE: s2cloudless runs on the CPU whatever --device says; ukis-csmask uses "
                  "CUDA only with onnxruntime-gpu installed (providers above)")
        note = C.models_note(list(models.values()))
        if note:
            print(note + "; speed does not depend on training")
        rows, configs = measure(args, models, peers)
    machine["loadavg_end"] = C.loadavg()
    checks = targets(configs)
    print_table(rows, configs)
    print()
    C.print_targets(checks)
    payload = {
        "benchmark": "speed",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": machine,
        "models": {k: vars(v) for k, v in models.items()},
        "models_note": note,
        "peers": peers,
        "s2cloudless_params": C.S2CLOUDLESS_PARAMS,
        "scene": "synthetic Sentinel-2 TOA reflectance: xsensei.demo.demo_scene tiles (1024 px) "
                 "interpolated by wavelength to the bands",
        "rows": rows,
        "configs": configs,
        "targets": checks,
    }
    return C.save_results("speed", payload, args.out, tag=args.device.split(":")[0])


if __name__ == "__main__":
    raise SystemExit(main())
