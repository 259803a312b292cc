"""STAC search -> cloud masks -> a resumable zarr cube, on threads or a Dask cluster.

:func:`stac_to_zarr` is the notebook entry point; ``xsensei stac`` (registered by
:func:`add_parser`) is the same job from the command line::

    xsensei stac --api https://earth-search.aws.element84.com/v1 --collection sentinel-2-l2a \\
        --bbox 11.0 46.0 11.1 46.1 --datetime 2023-06-01/2023-06-30 --out cube.zarr \\
        --model weights.safetensors --scheduler local

The cube holds ``cloud_mask`` (time, y, x; uint8 CF flags, 255 = nodata) with the CRS in
``spatial_ref``, ``cloud_fraction`` (time,) and per-time item metadata (``id``, ``platform``...);
open it with ``xr.open_zarr(path, decode_coords="all")``. Every chunk is recorded in a
done-manifest as it is written, so a job that dies (client killed, cluster lost, an asset that
cannot be read) is finished by rerunning it with ``resume=True`` / ``--resume``, which computes
only the missing chunks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsensei.errors import InputError, XSenseiError
from xsensei.io.stac import (
    StacError,
    asset_hrefs,
    explain_read_error,
    search,
    stack_items,
)

__all__ = ["StacJobReport", "add_parser", "stac_to_zarr"]


@dataclass(frozen=True)
class StacJobReport:
    """What :func:`stac_to_zarr` did."""

    path: Path
    items: tuple[str, ...]
    assets: tuple[str, ...]
    shape: tuple[int, ...]
    crs: str
    chunks_total: int
    chunks_written: int
    chunks_skipped: int
    dashboard: str | None
    seconds: float


@contextlib.contextmanager
def _scheduler(
    scheduler: Any, n_workers: int | None, threads_per_worker: int
) -> Iterator[tuple[Any, str | None]]:
    """``(what to pass to dask.compute, dashboard link)``; starts/stops a LocalCluster."""
    if scheduler is None or scheduler in ("threads", "processes", "synchronous", "sync"):
        yield scheduler, None
        return
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler, scheduler.dashboard_link
        return
    if scheduler == "local":
        workers = n_workers or max(1, min(4, (os.cpu_count() or 2) // threads_per_worker))
        with (
            LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                         processes=True) as cluster,
            Client(cluster) as client,
        ):
            yield client, client.dashboard_link
        return
    if isinstance(scheduler, str):
        with Client(scheduler) as client:
            yield client, client.dashboard_link
        return
    yield scheduler, None


def stac_to_zarr(
    out: str | os.PathLike[str],
    *,
    api: str | Any = None,
    collection: str | Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    items: Sequence[Any] | None = None,
    query: dict[str, Any] | None = None,
    max_items: int | None = None,
    modifier: Any = None,
    assets: Sequence[str] | None = None,
    resolution: float | None = None,
    epsg: int | None = None,
    chunks: int = 1024,
    model: Any = "default",
    model_resolution: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    torch_threads: int | None = None,
    batch_size: int = 4,
    scheduler: Any = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> StacJobReport:
    """Search a STAC API (or take ``items``), mask every item and write a (time, y, x) cube.

    - ``api`` + ``collection`` (+ ``bbox`` in degrees, ``datetime`` interval, ``query``,
      ``max_items``; ``modifier`` signs hrefs, e.g. ``planetary_computer.sign_inplace``) run a
      search; or pass ``items`` (a search result, an ``ItemCollection``, a list of items/dicts).
    - ``assets``, ``resolution`` (m), ``epsg``, ``chunks`` (spatial chunk = zarr chunk size):
      see :func:`xsensei.io.stac.stack_items`; by default the spectral assets on their finest
      native grid, clipped to ``bbox``.
    - ``model``: a packaged model name or a checkpoint path (a path, not a model object, on a
      multi-process cluster: each worker loads it once). ``model_resolution`` runs it on a
      coarser grid (see :func:`xsensei.cloudmask`); ``device``, ``precision``,
      ``torch_threads``, ``batch_size`` as there.
    - ``scheduler``: None (Dask's default: threads, or an active ``distributed.Client``),
      ``"threads"``/``"processes"``, ``"local"`` (a ``LocalCluster`` of ``n_workers`` processes
      with ``threads_per_worker`` threads, closed afterwards), a scheduler address
      (``"tcp://host:8786"``) or a ``distributed.Client``.
    - ``resume=True`` finishes an interrupted write of the same job (same items, grid, chunks
      and model): only chunks missing from the store's done-manifest are computed.
      ``overwrite=True`` replaces an existing store.
    - ``progress``: a tqdm bar on threads, the Dask dashboard link on a cluster.

    Errors: :class:`~xsensei.io.stac.StacApiError` (API unreachable; nothing written),
    :class:`~xsensei.io.stac.StacAssetError` (an asset failed to read: names the item and the
    asset; the chunks already written stay recorded, rerun with ``resume=True``),
    :class:`~xsensei.io.stac.StacMetadataError` (nothing found / unusable metadata).
    """
    import xarray as xr

    from xsensei.api import cloudmask, resolve_model
    from xsensei.io.zarr import to_zarr

    start = time.monotonic()
    out_path = Path(out)
    if overwrite and resume:
        raise InputError("pass either overwrite=True or resume=True, not both")
    if out_path.exists() and not (overwrite or resume):
        raise FileExistsError(
            f"{out_path} already exists; pass resume=True (--resume) to finish an interrupted "
            "job, or overwrite=True (--overwrite) to replace it"
        )
    resolve_model(model)  # fail fast on a missing checkpoint, before any search
    if items is None:
        if api is None or collection is None:
            raise InputError("pass api= and collection= to search, or items=")
        items = search(api, collection, bbox=bbox, datetime=datetime, query=query,
                       max_items=max_items, modifier=modifier)
    items = list(items)  # iterated twice: to stack, and to name the asset of a read error
    stack = stack_items(items, assets=assets, epsg=epsg, resolution=resolution, bbox=bbox,
                        chunks=chunks)
    keys = tuple(str(b) for b in stack["band"].values)
    hrefs = asset_hrefs(items, keys)
    mask = cloudmask(stack, model=model, resolution=model_resolution, device=device,
                     precision=precision, torch_threads=torch_threads, batch_size=batch_size)
    if not isinstance(mask, xr.DataArray):  # pragma: no cover - cloudmask of a DataArray
        raise TypeError("cloudmask returned no DataArray")
    mask.attrs.update({
        "source": "STAC",
        "stac_api": str(api) if isinstance(api, str) else "",
        "stac_collections": ",".join(sorted(set(map(str, stack["collection"].values))))
        if "collection" in stack.coords else "",
        "stac_assets": ",".join(keys),
    })
    with _scheduler(scheduler, n_workers, threads_per_worker) as (sched, dashboard):
        try:
            write = to_zarr(mask, out_path, overwrite=overwrite, resume=resume,
                            progress=progress, scheduler=sched)
        except StacError:
            raise
        except Exception as err:
            explained = explain_read_error(err, hrefs)
            if explained is None:
                raise
            for note in getattr(err, "__notes__", []):
                explained.add_note(note)
            raise explained from err
    return StacJobReport(
        path=write.path,
        items=tuple(str(i) for i in stack["id"].values),
        assets=keys,
        shape=tuple(int(n) for n in mask.shape),
        crs=str(stack.rio.crs),
        chunks_total=write.chunks_total,
        chunks_written=write.chunks_written,
        chunks_skipped=write.chunks_skipped,
        dashboard=dashboard,
        seconds=time.monotonic() - start,
    )


# --------------------------------------------------------------------------------------------
# command line


def _bbox(values: Sequence[str]) -> list[float]:
    parts = [p for v in values for p in v.replace(",", " ").split()]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(
            f"--bbox needs 4 numbers (west south east north, degrees), got {values}"
        )
    return [float(p) for p in parts]


def cmd_stac(args: argparse.Namespace) -> int:
    """Run :func:`stac_to_zarr` from parsed arguments; errors become one line on stderr."""
    from xsensei.cli import RESUME_HINT, report_interrupt

    try:
        bbox = _bbox(args.bbox) if args.bbox else None
        report = stac_to_zarr(
            args.out, api=args.api, collection=args.collection, bbox=bbox,
            datetime=args.datetime, max_items=args.max_items,
            assets=args.assets.split(",") if args.assets else None,
            resolution=args.resolution, epsg=args.epsg, chunks=args.chunks, model=args.model,
            model_resolution=args.model_resolution, device=args.device,
            precision=args.precision, torch_threads=args.torch_threads, scheduler=args.scheduler,
            n_workers=args.workers, threads_per_worker=args.threads_per_worker,
            resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
        )
    except (XSenseiError, ValueError, FileExistsError, argparse.ArgumentTypeError) as err:
        print(f"xsensei stac: error: {err}", file=sys.stderr)
        for note in getattr(err, "__notes__", []):
            print(f"  {note}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        err.add_note(RESUME_HINT)
        return report_interrupt("stac", err)
    print(
        f"wrote {report.path}: {len(report.items)} item(s), cube {report.shape} in {report.crs}, "
        f"{report.chunks_written} chunks written, {report.chunks_skipped} already done "
        f"({report.seconds:.1f} s)"
    )
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``xsensei stac`` on an ``argparse`` subparsers object."""
    from xsensei.cli import add_precision_argument

    p = subparsers.add_parser(
        "stac", help="search a STAC API, mask every item, write a zarr cube (resumable)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--api", required=True, help="STAC API root URL")
    p.add_argument("--collection", required=True, action="append",
                   help="collection id (repeat for several)")
    p.add_argument("--bbox", nargs="+", metavar="DEG",
                   help="west south east north in degrees: 4 numbers, or one 'W,S,E,N' "
                        "(write --bbox=-74.1,40.6,-73.8,40.9 when it starts with a minus)")
    p.add_argument("--datetime", default=None, help="e.g. 2023-06-01/2023-06-30")
    p.add_argument("--max-items", type=int, default=None)
    p.add_argument("--out", required=True, help="output .zarr store")
    p.add_argument("--assets", default=None, help="comma-separated asset keys (default: auto)")
    p.add_argument("--resolution", type=float, default=None,
                   help="output pixel size in metres (default: finest asset)")
    p.add_argument("--epsg", type=int, default=None, help="output CRS (default: the items')")
    p.add_argument("--chunks", type=int, default=1024, help="spatial chunk (= zarr chunk) size")
    p.add_argument("--model", default="default", help="packaged model name or checkpoint path")
    p.add_argument("--model-resolution", type=float, default=None,
                   help="run the model on a coarser grid (metres), e.g. 20 for Sentinel-2")
    p.add_argument("--device", default="auto")
    add_precision_argument(p)
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads per worker (Dask nanny workers default to 1)")
    p.add_argument("--scheduler", default=None,
                   help="'local' (a LocalCluster), a scheduler address tcp://host:8786, or "
                        "'threads' (default)")
    p.add_argument("--workers", type=int, default=None, help="workers of --scheduler local")
    p.add_argument("--threads-per-worker", type=int, default=1)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="finish an interrupted job: compute only the missing chunks")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_stac)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xsensei.stac_job ...``: the ``xsensei stac`` subcommand on its own."""
    parser = argparse.ArgumentParser(prog="xsensei")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["stac", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
