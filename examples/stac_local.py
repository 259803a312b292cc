"""Cloud-mask a Sentinel-2 time series from a STAC API into a zarr cube, all on this machine.

Run from the repository (CI runs it)::

    python examples/stac_local.py            # ../shared beside the repository
    python examples/stac_local.py --shared /path/to/shared --out /tmp/xsensei-stac

It builds a small STAC catalog from real imagery in ``shared/data/real`` (the eo-learn
Sentinel-2 L1C scenes as STAC 1.1 items, Earth-Search style), serves it with
``stac-fastapi-static`` on 127.0.0.1 (``pip install 'xsensei[stac]'``), then does what you do
with a public catalog (see ``examples/stac_public.py``): search, stack, mask on a local Dask
cluster, write a resumable zarr cube and open it again.

xsensei ships no trained weights yet: without ``--model`` the script uses a seeded, untrained
model, so the mask exercises the pipeline but is NOT a cloud mask.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from xsensei.io.stac import search, stack_items
from xsensei.stac_job import stac_to_zarr
from xsensei.testing.stac_server import StacServer, build_catalog

COLLECTION = "sentinel-2-c1-l1c"
BBOX = [14.5542, 45.8673, 14.5620, 45.8727]  # inside the eo-learn scene, Slovenia
PERIOD = "2015-07-20/2015-09-30"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared")
    parser.add_argument("--out", type=Path, default=None, help="folder for catalog and cube")
    parser.add_argument("--model", default="default",
                        help="packaged model name or checkpoint path (default: 'default')")
    parser.add_argument("--scheduler", default="local", help="'local', 'threads' or tcp://...")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="xsensei-stac-"))
    out.mkdir(parents=True, exist_ok=True)

    catalog = build_catalog(out / "catalog", args.shared)
    model = args.model
    with StacServer(catalog.catalog) as server:
        print(f"STAC API: {server.url}")

        # 1. what the search finds and how it is stacked (lazy; nothing read yet)
        items = search(server.url, COLLECTION, bbox=BBOX, datetime=PERIOD)
        stack = stack_items(items, bbox=BBOX, chunks=64)
        print(f"{len(items)} items; stack {dict(stack.sizes)} {stack.dtype}, {stack.rio.crs}")
        resolved = stack.sensei.bands()
        for name, wl, src in zip(resolved.names, resolved.wavelengths_nm, resolved.sources,
                                 strict=True):
            print(f"  {name:9s} {wl[1]:7.1f} nm  from {src}")

        # 2. the job: search -> stack -> mask -> zarr, on a local Dask cluster
        cube_path = out / "s2-cloudmask.zarr"
        report = stac_to_zarr(
            cube_path, api=server.url, collection=COLLECTION, bbox=BBOX, datetime=PERIOD,
            model=model, chunks=64, scheduler=args.scheduler, n_workers=2, overwrite=True,
        )
        print(f"wrote {report.path}: {report.chunks_written}/{report.chunks_total} chunks, "
              f"{report.seconds:.1f} s")

        # 3. resuming a finished job computes nothing
        again = stac_to_zarr(
            cube_path, api=server.url, collection=COLLECTION, bbox=BBOX, datetime=PERIOD,
            model=model, chunks=64, scheduler="threads", resume=True, progress=False,
        )
        print(f"resume: {again.chunks_written} chunks written, {again.chunks_skipped} done")

    cube = xr.open_zarr(cube_path, decode_coords="all")
    mask = cube["cloud_mask"]
    print(cube)
    print(f"CRS {mask.rio.crs}, transform {tuple(mask.rio.transform())[:6]}")
    flags = zip(mask.attrs["flag_meanings"].split(), mask.attrs["flag_values"], strict=True)
    print("flags:", ", ".join(f"{value} {meaning}" for meaning, value in flags))
    for t, frac, ident in zip(mask["time"].values, cube["cloud_fraction"].values,
                              mask["id"].values, strict=True):
        print(f"  {str(t)[:19]}  cloud fraction {float(frac):.3f}  {ident}")

    ok = (mask.rio.crs is not None and mask.rio.crs.to_epsg() == 32633
          and mask.sizes["time"] == len(items) and mask.dtype == np.uint8
          and again.chunks_written == 0 and "flag_values" in mask.attrs)
    print("OK" if ok else "FAILED: the cube is not as expected")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
