"""benchmarks/synthetic_speed: a small real run writes its numbers and judges the target only
at the target's patch size."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _keep_environment():
    """The benchmark pins thread counts in os.environ when imported; later subprocesses of the
    test session must not inherit that."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _run(tmp_path: Path, size: int, count: int) -> dict:
    synthetic_speed = importlib.import_module("benchmarks.synthetic_speed")
    out = tmp_path / f"speed-{size}.json"
    assert synthetic_speed.main(["--count", str(count), "--size", str(size), "--out",
                                 str(out)]) == 0
    return {**json.loads(out.read_text()), "_path": out}


def test_small_patches_are_timed_but_not_judged(tmp_path: Path, capsys) -> None:
    result = _run(tmp_path, size=64, count=3)
    assert result["benchmark"] == "synthetic_speed" and result["settings"]["size"] == 64
    assert result["patches_per_cpu_s"] > 0 and result["patches_per_wall_s"] > 0
    (target,) = result["targets"]
    assert target["pass"] is None and "not measured (64 px" in target["shown"]
    assert "TARGET n/a" in capsys.readouterr().out


def test_target_size_is_judged_against_20_per_second(tmp_path: Path) -> None:
    result = _run(tmp_path, size=256, count=2)
    (target,) = result["targets"]
    assert target["pass"] is (result["patches_per_cpu_s"] >= 20.0)
    assert target["measured"] == result["patches_per_cpu_s"]
    assert {"scene", "render"} == set(result["ms_per_patch"])
    from benchmarks.report import render

    table = render(result["_path"])
    assert f"| {result['patches_per_cpu_s']:.1f} |" in table
    assert ">= 20 patches/s of 256 x 256 x 13 bands on one core" in table
