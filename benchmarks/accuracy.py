"""Accuracy on the real labelled scenes: xsensei's models vs ukis-csmask and a threshold.

``python -m benchmarks.accuracy [--model NAME_OR_PATH ...] [--data DIR] [--draws 5]
[--seed 0] [--no-curves] [--curves-all] [--threads N]``

Every ``shared/data/real/*.npz`` scene (see ``shared/data/README.md``), scored as in the SEnSeI
paper: OA, BA, precision, recall and F1 (percent) for cloud vs not-cloud over labelled pixels.
Models run through :func:`xsensei.training.evaluate.evaluate_npz`, i.e. the product path
``DataArray.sensei.cloudmask(descriptors, model=...)`` with default arguments.

- models: every packaged model (``packaged_models()``), or those given with ``--model``; with
  none packaged, seeded *untrained* stand-ins (flagged in every line: their scores mean nothing);
- baselines: the brightness threshold (mean visible reflectance > 0.25) and ukis-csmask (its
  6-band model where the scene has blue, green, red, NIR, SWIR16, SWIR22, else its 4-band one);
- each scene with all bands and with RGB only (ukis-csmask needs NIR: not run on RGB);
- the s2cloudless test scene's mask is s2cloudless output, not truth: its rows are *agreement
  with s2cloudless*, and s2cloudless itself is run on it (package defaults) as a check;
- sensor independence (human-labelled scenes; ``--curves-all`` adds the others): F1 vs the
  number of bands kept, from random band subsets of each size (``--draws`` per size, fixed
  ``--seed``, the same subsets for every model), plus RGB-only and no-RGB.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _common as C  # sets OMP_WAIT_POLICY; torch loads later, lazily

#: Reference F1 figures from shared/data/README.md (measured there, not here): a check that
#: this harness scores the baselines as documented.
REFERENCE_F1 = {
    "ukis_sentinel2_512.npz": {"ukis-csmask": 86.4, "brightness-threshold": 88.9},
    "38cloud_l8_patch192_384.npz": {"ukis-csmask": 94.8, "brightness-threshold": 85.9},
}
THRESHOLD = "threshold"
SCORES = ("OA", "BA", "precision", "recall", "F1")


def load_scene(path: Path) -> dict[str, Any]:
    with np.load(path) as z:
        names = [str(n) for n in z["band_names"]]
        wl = np.stack([z["wl_min_nm"], z["wl_center_nm"], z["wl_max_nm"]], -1).astype(float)
        label_type = str(z["label_type"]) if "label_type" in z.files else "unknown"
        return {"path": path, "file": path.name, "names": names, "wl": wl,
                "values": np.asarray(z["bands"], dtype=np.float32),
                "mask": np.asarray(z["mask"]), "label_type": label_type,
                "human": label_type.lower().startswith("human"),
                "sensor": str(z["sensor"]) if "sensor" in z.files else None}


def rgb_indices(scene: dict[str, Any]) -> list[int]:
    from xsensei.training.evaluate import select_bands

    return select_bands(scene["names"], scene["wl"], ["red", "green", "blue"])


def common_names(scene: dict[str, Any]) -> list[str | None]:
    """Each band's common name where ukis-csmask needs it (by wavelength), else None."""
    from xsensei.training.evaluate import select_bands

    out: list[str | None] = [None] * len(scene["names"])
    for name in C.UKIS_BANDS:
        try:
            i = select_bands(scene["names"], scene["wl"], [name])[0]
        except ValueError:
            continue
        if out[i] is None:
            out[i] = name
    return out


def _row(scene: dict[str, Any], model: str, bands: str, res: dict[str, Any] | None,
         seconds: float, trained: bool | None = None, skipped: str | None = None
         ) -> dict[str, Any]:
    row: dict[str, Any] = {"file": scene["file"], "labels": "human" if scene["human"] else
                           "algorithm (agreement)", "model": model, "bands": bands,
                           "trained": trained, "seconds": seconds}
    if skipped:
        row["skipped"] = skipped
    elif res is not None:
        row.update({k: res.get(k) for k in (*SCORES, "n", "boundary")})
        row["band_names"] = res.get("bands")
    ref = REFERENCE_F1.get(scene["file"], {}).get(model)
    if ref is not None and bands == "all":
        row["reference_F1"] = ref
    return row


def score_model(scene: dict[str, Any], ref: str, bands: list[str] | str | None
                ) -> dict[str, Any]:
    from xsensei.training.evaluate import evaluate_npz

    return evaluate_npz(scene["path"], ref, bands=bands)


def score_mask(scene: dict[str, Any], pred: np.ndarray) -> dict[str, Any]:
    from xsensei.training.evaluate import NPZ_LABELS
    from xsensei.training.metrics import ConfusionMatrix, boundary_scores

    truth, pred = NPZ_LABELS(scene["mask"]), pred.astype(np.uint8)
    return {**ConfusionMatrix().update(truth, pred).scores(),
            "boundary": boundary_scores(truth, pred)}


def score_peers(scene: dict[str, Any], peers: dict[str, Any], threads: int
                ) -> list[dict[str, Any]]:
    rows = []
    info = peers["ukis-csmask"]
    common = common_names(scene)
    for bands, sel in (("all", list(range(len(scene["names"])))), ("rgb", rgb_indices(scene))):
        names = [common[i] for i in sel]
        reason = (info.get("reason") if not info["available"] else
                  (r if isinstance(r := C.ukis_band_order(names), str) else None))
        if reason:
            rows.append(_row(scene, "ukis-csmask", bands, None, 0.0, skipped=reason))
            continue
        start = time.perf_counter()
        csm, version = C.run_ukis(scene["values"][sel], names, threads)
        pred = np.select([csm == 1, csm == 2], [4, 3], 0)  # cloud, shadow, clear (store labels)
        row = _row(scene, "ukis-csmask", bands, score_mask(scene, pred),
                   time.perf_counter() - start)
        row["peer_model"] = version
        rows.append(row)
    info = peers["s2cloudless"]
    if len(scene["names"]) == 13:
        if info["available"]:
            start = time.perf_counter()
            pred = np.where(C.run_s2cloudless(scene["values"], threads) == 1, 4, 0)
            row = _row(scene, "s2cloudless", "all", score_mask(scene, pred),
                       time.perf_counter() - start)
            row["params"] = C.S2CLOUDLESS_PARAMS
            rows.append(row)
        else:
            rows.append(_row(scene, "s2cloudless", "all", None, 0.0, skipped=info["reason"]))
    return rows


def subsets(n: int, k: int, draws: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Up to ``draws`` distinct size-``k`` subsets of ``range(n)`` (all of them if fewer)."""
    total = math.comb(n, k)
    if total <= draws:
        return list(itertools.combinations(range(n), k))
    seen: set[tuple[int, ...]] = set()
    while len(seen) < draws:
        seen.add(tuple(sorted(rng.choice(n, size=k, replace=False).tolist())))
    return sorted(seen)


def curves(scene: dict[str, Any], models: list[tuple[str, str, bool | None]], draws: int,
           seed: int) -> list[dict[str, Any]]:
    """F1 vs bands kept for each model (same subsets for all), plus RGB-only and no-RGB."""
    from xsensei.api import MIN_BANDS

    n = len(scene["names"])
    rng = np.random.default_rng([seed, n, sum(map(ord, scene["file"]))])
    plan: list[tuple[str, int, tuple[int, ...]]] = []
    for k in range(MIN_BANDS, n + 1):
        plan += [(f"k={k}", k, s) for s in subsets(n, k, draws, rng)]
    rgb = tuple(rgb_indices(scene))
    rest = tuple(i for i in range(n) if i not in rgb)
    plan.append(("rgb", 3, rgb))
    plan.append(("no-rgb", len(rest), rest))
    out = []
    for label, ref, trained in models:
        for group, k, sel in plan:
            names = [scene["names"][i] for i in sel]
            entry: dict[str, Any] = {"file": scene["file"], "model": label, "group": group,
                                     "k": k, "bands": names, "trained": trained}
            if k < MIN_BANDS:
                entry["skipped"] = f"only {k} band(s) left; models need >= {MIN_BANDS}"
            else:
                try:
                    entry["F1"] = score_model(scene, ref, names)["F1"]
                except ValueError as exc:  # the threshold without a visible band
                    entry["skipped"] = str(exc).split(";")[0]
            out.append(entry)
    return out


def summarise_curves(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["file"], e["model"], e["group"]), []).append(e)
    out = []
    for (file, model, group), es in groups.items():
        f1 = [e["F1"] for e in es if e.get("F1") is not None and not math.isnan(e["F1"])]
        out.append({"file": file, "model": model, "group": group, "k": es[0]["k"],
                    "subsets": len(es), "scored": len(f1),
                    "F1_mean": float(np.mean(f1)) if f1 else None,
                    "F1_min": min(f1) if f1 else None, "F1_max": max(f1) if f1 else None,
                    "skipped": next((e["skipped"] for e in es if "skipped" in e), None)})
    return out


def targets(rows: list[dict[str, Any]], models: list[C.ModelChoice]) -> list[dict[str, Any]]:
    """Each model's F1 vs ukis-csmask's on the human-labelled scenes (all bands)."""
    def f1(model: str, file: str) -> float | None:
        for r in rows:
            if (r["model"], r["file"], r["bands"], r["labels"]) == (model, file, "all", "human"):
                return r.get("F1")
        return None

    files = sorted({r["file"] for r in rows if r["labels"] == "human"})
    out = []
    for m in models:
        pairs = {f: (f1(m.name, f), f1("ukis-csmask", f)) for f in files}
        pairs = {f: p for f, p in pairs.items() if None not in p}
        mean_m = float(np.mean([p[0] for p in pairs.values()])) if pairs else None
        mean_u = float(np.mean([p[1] for p in pairs.values()])) if pairs else None
        ok = None if mean_m is None or mean_u is None else mean_m >= mean_u
        shown = ", ".join(f"{Path(f).stem} {a:.1f} vs {b:.1f}" for f, (a, b) in pairs.items())
        if not m.trained:  # an untrained stand-in can neither pass nor miss an accuracy target
            ok, shown = None, f"untrained stand-in, not scored against the target; {shown}"
        out.append({"target": f"f1_vs_ukis:{m.name}", "role": m.role,
                    "text": f"{m.label()} ({m.role}) F1 >= ukis-csmask F1, mean over "
                            "human-labelled scenes",
                    "pass": ok, "measured": {"model_mean": mean_m, "ukis_mean": mean_u,
                                             "per_file": pairs},
                    "shown": (f"{C.fmt(mean_m)} vs {C.fmt(mean_u)} ({shown})" if pairs
                              else "not measured")})
    return out


def print_rows(rows: list[dict[str, Any]], labels: dict[str, str]) -> None:
    head = (f"{'scene':<33} {'labels':<10} {'model':<42} {'bands':<5} {'pixels':>7} "
            f"{'OA':>5} {'BA':>5} {'P':>5} {'R':>5} {'F1':>5} {'ref F1':>6}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        name = labels.get(r["model"], r["model"])
        first = (f"{Path(r['file']).stem:<33} {r['labels'].split()[0]:<10} {name:<42} "
                 f"{r['bands']:<5}")
        if "skipped" in r:
            print(f"{first} skipped: {r['skipped']}")
            continue
        print(f"{first} {r['n']:>7} " + " ".join(f"{C.fmt(r.get(s)):>5}" for s in SCORES)
              + f" {C.fmt(r.get('reference_F1')):>6}")
    print("(labels 'algorithm': the scene's mask is s2cloudless output, so its rows measure "
          "agreement with s2cloudless, not accuracy; ref F1: shared/data/README.md)")


def print_curves(summary: list[dict[str, Any]], labels: dict[str, str]) -> None:
    if not summary:
        return
    print("\nSensor independence: F1 (mean, min-max over band subsets) vs bands kept")
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in summary:
        by.setdefault((s["file"], s["model"]), []).append(s)
    for (file, model), ss in by.items():
        parts = []
        for s in ss:
            if s["F1_mean"] is None:
                parts.append(f"{s['group']}: n/a")
            elif s["scored"] == 1:
                parts.append(f"{s['group']}: {s['F1_mean']:.1f}")
            else:
                parts.append(f"{s['group']}: {s['F1_mean']:.1f} ({s['F1_min']:.1f}-"
                             f"{s['F1_max']:.1f}, {s['scored']})")
        print(f"  {Path(file).stem} / {labels.get(model, model)}: " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    p = C.arg_parser(__doc__)
    C.add_model_arg(p)
    p.add_argument("--data", default=str(C.REAL_DATA), help="folder of labelled .npz scenes")
    p.add_argument("--files", nargs="+", default=None, help="only these file names")
    p.add_argument("--draws", type=int, default=5, help="band subsets per size (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-curves", action="store_true", help="skip the band-subset curves")
    p.add_argument("--curves-all", action="store_true",
                   help="curves also on scenes without human labels")
    p.add_argument("--no-threshold-curves", action="store_true",
                   help="curves for the models only, not the threshold")
    p.add_argument("--threads", type=int, default=C.cpu_count(),
                   help="peer threads (ONNX, LightGBM); xsensei runs with default arguments")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = p.parse_args(argv)

    data = Path(args.data)
    files = sorted(data.glob("*.npz"))
    if args.files:
        files = [f for f in files if f.name in set(args.files)]
    if not files:
        print(f"no labelled .npz scenes in {data} (shared/data/real beside the project); "
              "nothing to score")
        return 1

    machine = C.machine_info("cpu")
    peers = C.peer_versions()
    with tempfile.TemporaryDirectory(prefix="xsensei-acc-") as tmp:
        if args.model:
            models = [C.choose_model("model", m, Path(tmp)) for m in args.model]
        else:
            models = C.packaged_choices() or [C.fallback_model(r, Path(tmp))
                                              for r in ("default", "fast")]
        for m in models:
            if m.role == "model":
                m.role = C.packaged_role(m) or next(
                    (r for r, s in C.ROLE_SEGMENTER.items() if s == m.segmenter), "model")
        labels = {m.name: m.label() for m in models}
        labels["brightness-threshold"] = "brightness-threshold:0.25"
        print(f"machine: {machine['cpu']}, {machine['cpus_usable']} usable cores, load "
              f"{machine['loadavg_start']}")
        for m in models:
            print(f"model ({m.role}): {m.label()} ({m.segmenter}, {m.source}, {m.ref})")
        for name, info in peers.items():
            print(f"peer {name}: " + (info["version"] if info["available"]
                                      else f"unavailable: {info['reason']}"))
        note = C.models_note(models)
        if note:
            print(note + "; their scores say nothing about xsensei's accuracy")

        rows: list[dict[str, Any]] = []
        curve_entries: list[dict[str, Any]] = []
        for path in files:
            scene = load_scene(path)
            print(f"-- {path.name}: {len(scene['names'])} bands, "
                  f"{scene['values'].shape[1]}x{scene['values'].shape[2]}, "
                  f"labels: {scene['label_type'][:60]}", flush=True)
            for m in models:
                for bands, sel in (("all", None), ("rgb", "red,green,blue")):
                    start = time.perf_counter()
                    res = score_model(scene, m.ref, sel)
                    rows.append(_row(scene, m.name, bands, res, time.perf_counter() - start,
                                     trained=m.trained))
            for bands, sel in (("all", None), ("rgb", "red,green,blue")):
                start = time.perf_counter()
                res = score_model(scene, THRESHOLD, sel)
                rows.append(_row(scene, "brightness-threshold", bands, res,
                                 time.perf_counter() - start))
            rows += score_peers(scene, peers, args.threads)
            if not args.no_curves and (scene["human"] or args.curves_all):
                todo = [(m.name, m.ref, m.trained) for m in models]
                if not args.no_threshold_curves:
                    todo.append(("brightness-threshold", THRESHOLD, None))
                curve_entries += curves(scene, todo, args.draws, args.seed)
    machine["loadavg_end"] = C.loadavg()

    print_rows(rows, labels)
    summary = summarise_curves(curve_entries)
    print_curves(summary, labels)
    print()
    checks = targets(rows, models)
    C.print_targets(checks, note)
    payload = {"benchmark": "accuracy",
               "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "machine": machine, "models": [vars(m) for m in models], "models_note": note,
               "peers": peers, "files": [f.name for f in files],
               "metrics": "cloud (thick+thin / cloud) vs rest over labelled pixels, percent; "
                          "xsensei.training.evaluate.evaluate_npz (product path, defaults)",
               "rows": rows, "curves": summary, "curve_subsets": curve_entries,
               "targets": checks}
    return C.save_results("accuracy", payload, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
