"""Markdown tables for the docs, from the JSON files the benchmarks wrote.

``python -m benchmarks.report [FILE.json ...]`` (default: the newest speed, memory, accuracy,
sensor_independence and clear_scenes files in ``benchmarks/results``). ``docs/benchmarks.md``
quotes this output, so every number in the docs can be traced to one file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SPEED_METHODS = ("numpy", "dask", "fast", "bare", "ukis", "s2cloudless")


def _num(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _source(path: Path, data: dict[str, Any]) -> str:
    m = data["machine"]
    return (f"Source: `benchmarks/results/{path.name}` ({m['date_utc'][:16]} UTC, {m['cpu']}, "
            f"{m['cpus_usable']} cores, {m.get('device', 'cpu')}, commit "
            f"`{m['git_commit'][:8]}`{' + local changes' if m.get('git_dirty') else ''}; load "
            f"average {m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end).")


def _targets(data: dict[str, Any]) -> list[str]:
    out = []
    for t in data.get("targets", []):
        verdict = {True: "met", False: "**missed**", None: "not measured"}[t["pass"]]
        exact = t.get("measured")
        shown = t["shown"] + (f" (= {exact:.4f})" if isinstance(exact, float) else "")
        out.append(f"- {t['text']}: {shown} ({verdict})")
    return out


def speed(path: Path, data: dict[str, Any]) -> list[str]:
    labels = {r["method"]: r["label"] for r in data["rows"]}
    keys = list(data["configs"])
    lines = ["| method | " + " | ".join(k.replace("x", "² x ") + " bands" for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for m in SPEED_METHODS:
        cells = []
        for k in keys:
            c = data["configs"][k]
            ms, sp = c["ms_per_mp"].get(m), c["speedup_vs_ukis"].get(m)
            cells.append("-" if ms is None else
                         f"{ms:,.0f}" + ("" if sp is None or m == "ukis" else f" ({sp:.2f}x)"))
        if any(c != "-" for c in cells):
            lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
    rounds = data["settings"].get("repeats")
    what = "one timed round" if rounds == 1 else f"median of {rounds} timed rounds"
    return [f"ms per megapixel, {what} (speed-up vs ukis-csmask in brackets):", "", *lines, "",
            *_targets(data), "", _source(path, data)]


def memory(path: Path, data: dict[str, Any]) -> list[str]:
    lines = ["| scene (6 bands, chunks 1024) | peak RSS | RSS before computing | wall time |",
             "|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['size']}² | {r['peak_rss_mb']:,.0f} MB | "
                     f"{r['rss_before_compute_mb']:,.0f} MB | {r['wall_s']:.0f} s |")
    job = data.get("job")
    return [*lines, "", f"Job: {job}." if job else "", *_targets(data), "",
            _source(path, data)]


def accuracy(path: Path, data: dict[str, Any]) -> list[str]:
    lines = ["| scene | labels | model | bands | OA | BA | precision | recall | F1 "
             "| errors at edges | F1 off edges |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        if "skipped" in r:
            continue
        edge = r.get("boundary") or {}
        lines.append(f"| {r['file'].removesuffix('.npz')} | {r['labels']} | {r['model']} | "
                     f"{r['bands']} | " + " | ".join(_num(r[k], ".1f") for k in
                                                      ("OA", "BA", "precision", "recall", "F1"))
                     + f" | {_num(edge.get('errors_in_band'), '.0f')} % | "
                     f"{_num(edge.get('F1_outside_band'), '.1f')} |")
    return [*lines, "", "Errors at edges: share of the cloud-vs-rest errors within 3 px of a "
            "labelled cloud edge; F1 off edges: F1 over the other pixels "
            "(`xsensei.training.metrics.boundary_scores`).", "", *_targets(data), "",
            _source(path, data)]


def sensor_independence(path: Path, data: dict[str, Any]) -> list[str]:
    lines = ["| model | set | sensor / bands | bands | F1 |", "|---|---|---|---|---|"]
    gaps = ["| model | gap | F1 difference | 90 % interval |", "|---|---|---|---|"]
    for r in data["results"]:
        for s in r["sets"]:
            lines.append(f"| {r['label']} | {s['kind']} | {s['set']} | {len(s['bands'])} | "
                         f"{s['F1']:.1f} |")
        for name, g in r["gaps"].items():
            gaps.append(f"| {r['label']} | {name} | {g['gap']:.1f} | "
                        f"{g['lo']:.1f} .. {g['hi']:.1f} |")
    st = data["settings"]
    head = (f"{st['scenes']} synthetic scenes of {st['size']} px (seed {st['seed']}); "
            "F1 cloud vs rest, pooled over pixels:")
    return [head, "", *lines, "", "Gaps (seen minus unseen; matched: seen sensor restricted "
            "to the unseen one's wavelengths):", "", *gaps, "", *_targets(data), "",
            _source(path, data)]


def _clear_cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    text = f"{cell['cloud_percent']:.1f}"
    if "cloud_percent_ci90" in cell:
        lo, hi = cell["cloud_percent_ci90"]
        text += f" ({lo:.1f}-{hi:.1f})"
    text += f", worst {cell['worst_scene_percent']:.1f}"
    if "vs_first" in cell:
        d = cell["vs_first"]
        text += f"; {d['points']:+.1f} ({d['ci90'][0]:+.1f} to {d['ci90'][1]:+.1f})"
    return text


def clear_scenes(path: Path, data: dict[str, Any]) -> list[str]:
    cols = [(r["label"], row["sensor"]) for r in data["results"] for row in r["rows"]]
    cols = list(dict.fromkeys(cols))
    cells = {(r["label"], row["sensor"], row["layout"]): row for r in data["results"]
             for row in r["rows"]}
    layouts = list(dict.fromkeys(row["layout"] for r in data["results"] for row in r["rows"]))
    lines = ["| layout | " + " | ".join(f"{m}, {s}" for m, s in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for layout in layouts:
        row = [cells.get((m, s, layout)) for m, s in cols]
        lines.append(f"| {layout} | " + " | ".join(_clear_cell(c) for c in row) + " |")
    st = data["settings"]
    head = (f"{st['per_layout']} cloud-free synthetic scenes of {st['size']} px per layout "
            f"(seed {st['seed']}); percent of pixels `cloudmask()` calls cloud, pooled "
            "(90 % scene-bootstrap interval where recorded; worst scene; difference from the "
            "first model on the same scenes, with its interval, where recorded):")
    return [head, "", *lines, "", _source(path, data)]


def synthetic_speed(path: Path, data: dict[str, Any]) -> list[str]:
    size = data["settings"]["size"]
    ms = data["ms_per_patch"]
    return [f"{data['settings']['count']} Sentinel-2A patches of {size}² x 13 bands, one thread:",
            "",
            "| patches/s per CPU second | wall clock | scene / render ms | random 13-band sets |",
            "|---|---|---|---|",
            f"| {data['patches_per_cpu_s']:.1f} | {data['patches_per_wall_s']:.1f} | "
            f"{ms['scene']:.1f} / {ms['render']:.1f} | "
            f"{data['random_bandsets_patches_per_s']:.1f} patches/s |",
            "", *_targets(data), "", _source(path, data)]


# benchmark kind -> table renderer; also the default order of main()'s newest files
RENDERERS = {"speed": speed, "memory": memory, "accuracy": accuracy,
             "sensor_independence": sensor_independence, "clear_scenes": clear_scenes,
             "synthetic_speed": synthetic_speed}


def newest(kind: str) -> Path | None:
    files = sorted(RESULTS.glob(f"{kind}*.json"), key=lambda p: p.name.rsplit("-", 1)[-1])
    return files[-1] if files else None


def render(path: Path) -> str:
    data = json.loads(path.read_text())
    kind = data["benchmark"]
    body = RENDERERS[kind](path, data)
    return "\n".join([f"### {kind}", "", *body, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path)
    args = p.parse_args(argv)
    files = args.files or [f for f in map(newest, RENDERERS) if f]
    for f in files:
        print(render(f))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
