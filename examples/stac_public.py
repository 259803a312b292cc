"""Cloud-mask a month of Sentinel-2 or Landsat from a public STAC API into a zarr cube.

Documented, not run in CI (it needs the internet and a trained checkpoint)::

    python examples/stac_public.py earth-search --model weights.safetensors --out s2.zarr
    python examples/stac_public.py planetary-computer --model weights.safetensors --out s2.zarr
    python examples/stac_public.py landsat --model weights.safetensors --out landsat.zarr \\
        --scheduler tcp://scheduler:8786

- Earth Search (Element 84, no account): ``sentinel-2-l1c`` / ``sentinel-2-c1-l2a``, assets named
  by common name (``blue``, ``nir08``...), STAC 1.1-style metadata with the Sentinel-2 offset
  (-0.1 from processing baseline 04.00) in ``raster:bands``.
- Planetary Computer (Microsoft): ``sentinel-2-l2a`` (no L1C), assets ``B01``..``B12``/``B8A``
  with no scale in STAC (xsensei applies 1e-4 and the baseline offset), hrefs that need signing:
  ``pip install planetary-computer`` and pass ``modifier=planetary_computer.sign_inplace``.
  ``landsat-c2-l2``: surface reflectance (scale 2.75e-5, offset -0.2) and ``lwir11`` surface
  temperature in kelvin.

L2A / Landsat L2 are surface (bottom-of-atmosphere) reflectance; SEnSeI models are trained on
top-of-atmosphere reflectance, so prefer L1C where the catalog has it.
"""

from __future__ import annotations

import argparse
from typing import Any

from xsensei.stac_job import stac_to_zarr

JOBS: dict[str, dict[str, Any]] = {
    "earth-search": {
        "api": "https://earth-search.aws.element84.com/v1",
        "collection": "sentinel-2-l1c",
        "bbox": [11.02, 46.02, 11.14, 46.10],  # Trento, Italy
        "datetime": "2023-06-01/2023-06-30",
        "query": {"eo:cloud_cover": {"lt": 80}},
        "model_resolution": 20,  # SEnSeI models work best at 20-30 m
    },
    "planetary-computer": {
        "api": "https://planetarycomputer.microsoft.com/api/stac/v1",
        "collection": "sentinel-2-l2a",
        "bbox": [11.02, 46.02, 11.14, 46.10],
        "datetime": "2023-06-01/2023-06-30",
        "model_resolution": 20,
        "sign": True,
    },
    "landsat": {
        "api": "https://planetarycomputer.microsoft.com/api/stac/v1",
        "collection": "landsat-c2-l2",
        "bbox": [-74.1, 40.6, -73.8, 40.9],  # New York
        "datetime": "2023-06-01/2023-07-31",
        "query": {"platform": {"in": ["landsat-8", "landsat-9"]}},
        "sign": True,
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--model", required=True, help="checkpoint written by xsensei.save_model")
    parser.add_argument("--out", required=True, help="zarr store to write")
    parser.add_argument("--scheduler", default="local",
                        help="'local' (LocalCluster), 'threads', or a scheduler address")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--device", default="auto", help="cuda on GPU workers")
    args = parser.parse_args()

    job = dict(JOBS[args.job])
    modifier = None
    if job.pop("sign", False):
        import planetary_computer  # pip install planetary-computer

        modifier = planetary_computer.sign_inplace
    report = stac_to_zarr(
        args.out, model=args.model, modifier=modifier, chunks=1024,
        scheduler=args.scheduler, resume=args.resume, device=args.device, **job,
    )
    print(f"{report.path}: {len(report.items)} items, {report.shape} in {report.crs}; "
          f"{report.chunks_written} chunks written, {report.chunks_skipped} already done")
    if report.dashboard:
        print(f"dashboard: {report.dashboard}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
