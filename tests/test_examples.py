"""The runnable examples and the documentation site, checked as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_stac_local_example_writes_a_correct_cube() -> None:
    """examples/stac_local.py starts a local STAC API, masks real imagery, checks the cube."""
    run = subprocess.run(
        [sys.executable, "examples/stac_local.py"], cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.slow
def test_docs_build_strict_without_warnings(tmp_path: Path) -> None:
    """mkdocs --strict turns every warning (broken link, bad reference) into a failure."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "WARNING" not in run.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "index.html").is_file()
