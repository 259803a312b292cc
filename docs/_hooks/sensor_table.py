"""MkDocs hook: fill ``<!-- sensor-table -->`` with the sensor catalogue, read at build time.

The table comes from :mod:`xsensei.sensors` (the packaged ``catalogue.json``), so the docs list
exactly the sensors and band wavelengths the installed package knows. Not package code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- sensor-table -->"


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return ""
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def sensor_markdown() -> str:
    from xsensei.sensors import get_sensor, list_sensors

    lines = [
        "| sensor | aliases (some) | bands | wavelengths from |",
        "|---|---|---|---|",
    ]
    details = []
    for name in list_sensors():
        s = get_sensor(name)
        aliases = ", ".join(f"`{a}`" for a in s.aliases[:4])
        measured = sum(1 for b in s if (b.source or "").startswith("srf"))
        if measured == len(s):
            origin = "response curves"
        elif measured == 0:
            origin = "nominal values"
        else:
            origin = f"curves ({measured} bands), nominal (rest)"
        lines.append(f"| `{name}` | {aliases} | {len(s)} | {origin} |")
        rows = [
            f'??? note "`{name}`: {s.description.rstrip(".").replace(chr(34), chr(39))}"',
            "",
            "    | band | common name | min nm | centre nm | max nm | GSD m | kind |",
            "    |---|---|---|---|---|---|---|",
        ]
        for b in s:
            rows.append(
                f"    | `{b.name}` | {b.common_name or ''} | {_fmt(b.wl_min_nm)} | "
                f"{_fmt(b.wl_center_nm)} | {_fmt(b.wl_max_nm)} | {_fmt(b.resolution_m, 0)} | "
                f"{b.kind} |"
            )
        details.append("\n".join(rows))
    return "\n".join(lines) + "\n\n" + "\n\n".join(details) + "\n"


def on_config(config: Any, **kwargs: Any) -> Any:
    # Build from a checkout without installing: the repository root is mkdocs.yml's folder.
    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_page_markdown(markdown: str, *, page: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, sensor_markdown())
