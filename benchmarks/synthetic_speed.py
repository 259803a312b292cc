"""Synthetic scene generator throughput: patches per second on one core.

``python -m benchmarks.synthetic_speed [--count N] [--size S] [--out F]`` prints patches/s for
256 x 256 Sentinel-2 (13 bands) patches, the split between drawing the scene and rendering it,
and the rate for random 13-band sets, checks the training issue's target (>= 20 patches/s of
256 x 256 x 13 bands on one core) and saves the numbers under ``benchmarks/results/``.
Threads are pinned to one (as in a DataLoader worker); the main figure is per CPU-second of
this process, which stays meaningful on a busy machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import _common as C  # noqa: E402
from xsensei.training.synthetic import (  # noqa: E402
    SceneGenerator,
    SyntheticConfig,
    random_bandset,
    sensor_bandset,
)

TARGET_PATCHES_PER_S = 20.0


def main(argv: list[str] | None = None) -> int:
    """Time ``count`` patches after a short warm-up (library, banks and band weights)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    machine = C.machine_info("cpu")
    gen = SceneGenerator(SyntheticConfig(size=args.size), seed=0)
    s2 = sensor_bandset("sentinel-2a")
    for i in range(3):
        gen.sample(s2, 10_000 + i)

    start, cpu = time.perf_counter(), time.process_time()
    for i in range(args.count):
        gen.sample(s2, i)
    total = time.perf_counter() - start
    total_cpu = time.process_time() - cpu

    start = time.perf_counter()
    scenes = [gen.scene(i) for i in range(args.count)]
    t_scene = time.perf_counter() - start
    start = time.perf_counter()
    for scene in scenes:
        gen.render(scene, s2)
    t_render = time.perf_counter() - start

    rng = np.random.default_rng(0)
    bandsets = [random_bandset(rng, 13) for _ in range(args.count)]
    start = time.perf_counter()
    for i, bs in enumerate(bandsets):
        gen.sample(bs, i)
    t_random = time.perf_counter() - start

    n = args.count
    rate = n / total_cpu
    print(
        f"sentinel-2a 13 bands, {args.size}x{args.size}: {rate:.1f} patches/s of CPU "
        "time (the single-core rate; wall clock includes waiting on a shared machine)"
    )
    print(
        f"  wall clock: {n / total:.1f} patches/s "
        f"({1000 * total / n:.1f} ms/patch: scene {1000 * t_scene / n:.1f} ms, "
        f"render {1000 * t_render / n:.1f} ms)"
    )
    print(f"random 13-band sets (new band weights each): {n / t_random:.1f} patches/s")
    at_target_size = args.size == 256
    checks = [{
        "target": "patches_per_cpu_s",
        "text": f">= {TARGET_PATCHES_PER_S:g} patches/s of 256 x 256 x 13 bands on one core",
        "pass": rate >= TARGET_PATCHES_PER_S if at_target_size else None,
        "measured": rate,
        "shown": f"{rate:.1f}" if at_target_size else f"not measured ({args.size} px patches)",
    }]
    C.print_targets(checks)
    machine["loadavg_end"] = C.loadavg()
    payload = {"benchmark": "synthetic_speed",
               "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "machine": machine,
               "patches_per_cpu_s": rate, "patches_per_wall_s": n / total,
               "ms_per_patch": {"scene": 1000 * t_scene / n, "render": 1000 * t_render / n},
               "random_bandsets_patches_per_s": n / t_random,
               "targets": checks}
    return C.save_results("synthetic_speed", payload, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
