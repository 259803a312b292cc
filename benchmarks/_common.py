"""Shared pieces of the benchmarks: which models to run, the peers, synthetic scenes, machine
facts and JSON output.

Import this module before torch (it sets ``OMP_WAIT_POLICY=PASSIVE`` unless already set: busy-
waiting OpenMP threads thrash on shared cores, see ``training/README.md``; the value used is
recorded in every result file).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import functools
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: The repository root (benchmarks/ lives in it).
ROOT = Path(__file__).resolve().parents[1]
#: ``shared/`` beside the project: the real labelled scenes (``shared/data/real/*.npz``).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_DATA = SHARED / "data" / "real"
RESULTS = ROOT / "benchmarks" / "results"

#: Recipes whose architecture the untrained fallback models copy (so speed reflects what ships).
RECIPES = {"default": ROOT / "training" / "default_deeplab_refine.json",
           "fast": ROOT / "training" / "fast_pixelnet.json"}
ROLE_SEGMENTER = {"default": "deeplabv3plus_refined", "fast": "pixelnet"}

#: Band order and names ukis-csmask's models take (4-band model: the first four).
UKIS_BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
#: Sentinel-2 bands of the 6-band scenes (the ukis-csmask set; NIR = B08 as in ukis-pysat).
S2_6 = ("B02", "B03", "B04", "B08", "B11", "B12")
#: Common name of each Sentinel-2 band, in catalogue order (for ukis-csmask's band_order).
S2_COMMON = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
             "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08",
             "B09": "nir09", "B10": "cirrus", "B11": "swir16", "B12": "swir22"}
#: Centre wavelengths (nm) of the demo scene's six bands, for interpolating other bands.
_DEMO_CENTRES = np.array([482.0, 562.0, 655.0, 865.0, 1609.0, 2201.0])
#: Absorption bands are darker than their neighbours suggest (water vapour, cirrus).
_ABSORPTION = {"B09": 0.3, "B10": 0.05}


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# =============================================================================================
# models


@dataclass
class ModelChoice:
    """One model a benchmark runs: what to pass as ``model=`` and what it is."""

    role: str  # "default" | "fast" | "model" (accuracy: any shipped model)
    ref: str  # packaged name or checkpoint path, passed as model=
    name: str  # the checkpoint's recorded name
    segmenter: str
    trained: bool
    source: str  # "packaged" | "path" | "untrained fallback"
    inference: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        flag = "" if self.trained else " [UNTRAINED]"
        return f"{self.name}{flag}"


def _choice(role: str, ref: str, source: str) -> ModelChoice:
    from xsensei.weights.checkpoint import read_metadata, resolve_model_path

    meta = read_metadata(resolve_model_path(ref))
    return ModelChoice(role, ref, str(meta.get("name", ref)),
                       str(meta["architecture"]["segmenter"]["name"]),
                       bool(meta.get("trained", False)), source,
                       dict(meta.get("inference", {})))


def packaged_choices() -> list[ModelChoice]:
    """Every model shipped in ``xsensei/weights`` (``packaged_models()``), by name."""
    from xsensei.weights.checkpoint import packaged_models

    return [_choice("model", name, "packaged") for name in sorted(packaged_models())]


def fallback_model(role: str, workdir: Path) -> ModelChoice:
    """A seeded, untrained model with the architecture of the role's training recipe, saved
    under ``workdir``. Speed and memory do not depend on training; accuracy does (flagged)."""
    import torch

    from xsensei.nn.model import CloudMaskModel
    from xsensei.weights.checkpoint import save_model

    recipe: dict[str, Any] = {}
    if RECIPES[role].is_file():
        recipe = json.loads(RECIPES[role].read_text(encoding="utf-8"))
    seg = recipe.get("segmenter", ROLE_SEGMENTER[role])
    torch.manual_seed({"default": 0, "fast": 1}[role])
    kwargs = {"segmenter_kwargs": recipe.get("segmenter_kwargs") or {}}
    if recipe.get("classes"):
        kwargs["classes"] = recipe["classes"]
    model = CloudMaskModel(seg, **kwargs)
    inference = {"window": int(recipe.get("inference_window", 256)),
                 "overlap": int(recipe.get("inference_overlap", 64))}
    name = f"untrained-{recipe.get('name', seg)}"
    path = save_model(
        model, workdir / f"{name}.safetensors", name=name, trained=False, overwrite=True,
        inference=inference,
        provenance={"data": "none: random initial weights (benchmark fallback, torch seed "
                            f"{ {'default': 0, 'fast': 1}[role]})",
                    "recipe": RECIPES[role].name if RECIPES[role].is_file() else None},
    )
    choice = _choice(role, str(path), "untrained fallback")
    return choice


def packaged_role(choice: ModelChoice) -> str | None:
    """``"default"`` / ``"fast"`` for the packaged models those aliases name, else None."""
    from xsensei.weights.checkpoint import MODEL_ALIASES

    return next((role for role, name in MODEL_ALIASES.items()
                 if choice.source == "packaged" and name in (choice.ref, choice.name)), None)


def choose_model(role: str, arg: str | None, workdir: Path) -> ModelChoice:
    """The model for ``role``: ``arg`` (name or path) if given, else the packaged model named
    after the role, else the first packaged model with the role's segmenter, else a fallback."""
    if arg:
        from xsensei.weights.checkpoint import packaged_models

        source = "packaged" if arg in packaged_models() else "path"
        return _choice(role, arg, source)
    shipped = packaged_choices()
    for c in shipped:
        if c.ref == role or packaged_role(c) == role:
            c.role = role
            return c
    for c in shipped:
        if c.segmenter == ROLE_SEGMENTER[role]:
            c.role = role
            return c
    return fallback_model(role, workdir)


def cpu_machine(threads: int) -> dict[str, Any]:
    """Set torch's CPU threads, then describe the machine (:func:`machine_info`)."""
    import torch

    torch.set_num_threads(threads)
    return machine_info("cpu")


def paired_bootstrap(metric: Callable[[np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray,
                     draws: np.ndarray) -> tuple[float, float, float]:
    """``metric(a) - metric(b)`` for per-scene arrays over the same scenes, and the 90 %
    interval of that difference over bootstrap scene draws ``(boot, scenes)`` applied to both
    (``metric`` pools over the scenes axis, -2)."""
    diff = float(metric(a) - metric(b))
    lo, hi = np.percentile(metric(a[draws]) - metric(b[draws]), [5, 95])
    return diff, float(lo), float(hi)


def recorded_generator(meta: dict[str, Any], label: str) -> tuple[Any, str]:
    """The synthetic generator settings a checkpoint was trained on (its provenance's record),
    and where they came from: ``"provenance"``, or ``"defaults"`` with a printed warning when
    the checkpoint records none, so that scenes drawn from other settings than the model's
    training data (and so not comparable with another model's) never pass unnoticed."""
    from xsensei.training.synthetic import SyntheticConfig

    record = (meta.get("provenance") or {}).get("generator") or {}
    config = SyntheticConfig.from_record(record)
    if record.get("config"):
        return config, "provenance"
    print(f"   WARNING: {label} records no generator settings in its provenance; its scenes "
          f"use the generator's defaults (physics {config.physics}), not its training data, "
          "and do not compare with other models' scenes", flush=True)
    return config, "defaults"


def chosen_models(refs: Sequence[str] | None, workdir: Path) -> list[ModelChoice]:
    """``--model`` choices, else every packaged model, else an untrained default (flagged)."""
    if refs:
        return [choose_model("model", m, workdir) for m in refs]
    return packaged_choices() or [fallback_model("default", workdir)]


def models_note(models: Sequence[ModelChoice]) -> str | None:
    """A loud line when any model is an untrained stand-in."""
    untrained = [m for m in models if not m.trained]
    if not untrained:
        return None
    fallback = any(m.source == "untrained fallback" for m in untrained)
    why = ("no trained model is packaged (xsensei.weights.checkpoint.packaged_models() is "
           "empty), so seeded untrained models with the training recipes' architectures stand "
           "in" if fallback else "the checkpoint is marked trained=false")
    return f"NOTE: {', '.join(m.name for m in untrained)}: UNTRAINED ({why})"


# =============================================================================================
# peers


def peer_versions() -> dict[str, dict[str, Any]]:
    """Whether each peer imports, its version, or why not."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, dict[str, Any]] = {}
    for name, module, dist in (("ukis-csmask", "ukis_csmask.mask", "ukis-csmask"),
                               ("s2cloudless", "s2cloudless", "s2cloudless")):
        try:
            __import__(module)
            out[name] = {"available": True, "version": version(dist)}
        except (ImportError, PackageNotFoundError) as exc:
            out[name] = {"available": False,
                         "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0]} "
                                   "(pip install -e '.[bench]')"}
    if out["ukis-csmask"]["available"]:
        import onnxruntime

        out["ukis-csmask"]["onnxruntime"] = onnxruntime.__version__
        out["ukis-csmask"]["providers"] = onnxruntime.get_available_providers()
    if out["s2cloudless"]["available"]:
        import lightgbm

        out["s2cloudless"]["lightgbm"] = lightgbm.__version__
    return out


def ukis_band_order(common_names: Sequence[str | None]) -> tuple[list[int], list[str]] | str:
    """Positions and ukis-csmask names of the bands its 6-band (or else 4-band) model takes,
    or the reason it cannot run on these bands."""
    have = {n: i for i, n in enumerate(common_names) if n}
    need = list(UKIS_BANDS) if all(n in have for n in UKIS_BANDS) else list(UKIS_BANDS[:4])
    missing = [n for n in need if n not in have]
    if missing:
        return f"ukis-csmask needs blue, green, red, nir (+ swir16, swir22); missing {missing}"
    return [have[n] for n in need], need


def ukis_providers(device: str) -> list[str]:
    import onnxruntime

    avail = onnxruntime.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" in avail:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def run_ukis(values: NDArray[np.float32], common_names: Sequence[str | None], threads: int,
             device: str = "cpu") -> tuple[NDArray[np.uint8], str]:
    """ukis-csmask on ``(C, H, W)`` TOA reflectance: ``(H, W)`` 0 clear, 1 cloud, 2 shadow.

    What its users do: the image as (rows, cols, bands) float32 and a band order; CSmask picks
    its bands, normalises, tiles (256 px, 20 % overlap), runs ONNX and blends. Each call builds
    its own ONNX session (that is its API), so that is included in the time.
    """
    import warnings

    from ukis_csmask.mask import CSmask

    order = ukis_band_order(common_names)
    if isinstance(order, str):
        raise ValueError(order)
    idx, names = order
    img = np.ascontiguousarray(np.moveaxis(values[idx], 0, -1), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "smaller than the tiling size"
        m = CSmask(img, band_order=names, product_level="l1c", intra_op_num_threads=threads,
                   inter_op_num_threads=1, providers=ukis_providers(device))
    return m.csm[..., 0], m.model_version


#: s2cloudless detector parameters used everywhere here (the package defaults, 13 bands in).
S2CLOUDLESS_PARAMS = {"threshold": 0.4, "average_over": 1, "dilation_size": 1, "all_bands": True}


@functools.lru_cache(maxsize=1)
def s2cloudless_detector() -> Any:
    """One detector per process, as its users keep one (the LightGBM model loads once)."""
    from s2cloudless import S2PixelCloudDetector

    det = S2PixelCloudDetector(**S2CLOUDLESS_PARAMS)
    det.classifier  # noqa: B018  (loads the booster now, not inside the first timed call)
    return det


def run_s2cloudless(values13: NDArray[np.float32], threads: int) -> NDArray[np.uint8]:
    """s2cloudless on all 13 Sentinel-2 L1C bands ``(13, H, W)``: ``(H, W)`` 1 cloud, 0 clear."""
    if values13.shape[0] != 13:
        raise ValueError("s2cloudless needs the 13 Sentinel-2 L1C bands (B01..B12 with B8A)")
    data = np.moveaxis(values13, 0, -1)[None]
    return s2cloudless_detector().get_cloud_masks(data, num_threads=threads)[0]


def ukis_session_ms(common_names: Sequence[str | None], threads: int, device: str = "cpu",
                    repeats: int = 3) -> float | None:
    """What one ukis-csmask call spends building its ONNX session (inside its timed calls)."""
    import onnxruntime
    import ukis_csmask

    order = ukis_band_order(common_names)
    if isinstance(order, str):
        return None
    tag = "6b" if len(order[1]) == 6 else "4b"
    path = Path(ukis_csmask.__file__).parent / f"model_{tag}_l1c.onnx"
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    times = [timed(lambda: onnxruntime.InferenceSession(
        str(path), sess_options=so, providers=ukis_providers(device)))[0]
        for _ in range(repeats)]
    return 1000 * median(times)


# =============================================================================================
# synthetic scenes (for timing: content barely matters, but stays physically plausible)


@dataclass(frozen=True)
class BandSet:
    names: tuple[str, ...]
    descriptors: NDArray[np.float64]  # (N, 3) nm
    common: tuple[str | None, ...]

    @property
    def n(self) -> int:
        return len(self.names)


def s2_bands(n: int) -> BandSet:
    """Sentinel-2 bands from the package catalogue: all 13, or the ukis-csmask six."""
    from xsensei.sensors import get_sensor

    s2 = get_sensor("sentinel-2a")
    if n == 13:
        bands = list(s2)
    elif n == 6:
        bands = [s2.band(b) for b in S2_6]
    else:
        raise ValueError(f"--bands takes 6 or 13 (Sentinel-2), got {n}")
    return BandSet(tuple(b.name for b in bands),
                   np.array([b.wavelengths_nm for b in bands], dtype=np.float64),
                   tuple(S2_COMMON.get(b.name) for b in bands))


def _interp_weights(centres: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, 6) linear interpolation weights from the demo's six bands to ``centres``."""
    w = np.zeros((len(centres), len(_DEMO_CENTRES)))
    for i, c in enumerate(centres):
        j = int(np.clip(np.searchsorted(_DEMO_CENTRES, c) - 1, 0, len(_DEMO_CENTRES) - 2))
        t = float(np.clip((c - _DEMO_CENTRES[j]) / (_DEMO_CENTRES[j + 1] - _DEMO_CENTRES[j]), 0, 1))
        w[i, j], w[i, j + 1] = 1 - t, t
    return w


def demo_tile(height: int, width: int, seed: int, bands: BandSet) -> NDArray[np.float32]:
    """``(N, height, width)`` float32 reflectance: the package's demo scene (fields, a lake,
    clouds), its six bands interpolated by wavelength to ``bands``."""
    from xsensei.demo import demo_scene

    side = max(height, width, 8)
    six = demo_scene(side, seed=seed).values[:, :height, :width].astype(np.float32)
    w = _interp_weights(bands.descriptors[:, 1]) * np.array(
        [[_ABSORPTION.get(name, 1.0)] for name in bands.names]
    )
    out = np.tensordot(w.astype(np.float32), six, axes=1)
    return np.clip(out, 0, 1).astype(np.float32)


def synthetic_scene(size: int, bands: BandSet, tile: int = 1024, seed: int = 0
                    ) -> NDArray[np.float32]:
    """A ``(N, size, size)`` scene tiled from demo scenes (bounded memory while generating)."""
    out = np.empty((bands.n, size, size), dtype=np.float32)
    k = 0
    for y in range(0, size, tile):
        for x in range(0, size, tile):
            h, w = min(tile, size - y), min(tile, size - x)
            out[:, y : y + h, x : x + w] = demo_tile(h, w, seed * 100_003 + k, bands)
            k += 1
    return out


# =============================================================================================
# timing, machine facts, output


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout.strip()
    except Exception:
        return None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Facts that make a result file interpretable later."""
    import torch

    import xsensei
    from xsensei._hardware import cpu_model

    info: dict[str, Any] = {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus_usable": cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "loadavg_start": loadavg(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "xsensei": xsensei.__version__,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def _clean(obj: Any) -> Any:
    """NaN / inf -> None (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(kind: str, payload: dict[str, Any], out: str | None = None,
               tag: str | None = None) -> Path:
    """Save under ``benchmarks/results/<kind>[-tag]-<UTC time>.json`` (or ``out``)."""
    if out:
        path = Path(out)
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"{kind}{'-' + tag if tag else ''}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(json.loads(json.dumps(payload, default=_json_default))), indent=1)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line: the module docstring's first paragraph as the description,
    the rest as the epilog of ``--help``."""
    text = doc or ""
    return argparse.ArgumentParser(description=text.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=text.split("\n\n", 1)[-1])


def add_model_arg(parser: argparse.ArgumentParser) -> None:
    """``--model`` (repeatable) for benchmarks that score every packaged model by default."""
    parser.add_argument("--model", action="append", default=None,
                        help="packaged name or checkpoint path (repeatable; default: all "
                             "packaged)")


def save_results(kind: str, payload: dict[str, Any], out: str | None = None,
                 tag: str | None = None) -> int:
    """:func:`write_json`, then say where; the benchmark's exit status (0)."""
    path = write_json(kind, payload, out, tag)
    print(f"\nwrote {path}")
    return 0


def print_targets(checks: Sequence[dict[str, Any]], note: str | None = None) -> None:
    """One ``TARGET PASS|MISS|n/a`` line per check, then the untrained-model note if any."""
    for t in checks:
        print(f"TARGET {verdict(t['pass'])}  {t['text']}: {t['shown']}")
    if note:
        print(note)


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "MISS")


def fmt(value: float | None, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)
