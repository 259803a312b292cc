"""SEnSeI pre-training runs: learning, exact resume, file safety, loading, CLI.

Runs are tiny (tens of steps, batch <= 128, 3-6 bands, one thread) so the whole file stays well
under a minute on a busy 2-core CPU; the recipe itself is exercised, not its scale.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from xsensei.errors import CheckpointError
from xsensei.nn.heads import PretrainHeads, recovery_loss
from xsensei.nn.sensei import SEnSeI
from xsensei.training import pretrain as pt
from xsensei.training.pretrain import (
    PretrainConfig,
    add_parser,
    l1_penalty,
    load_pretrained_sensei,
    pretrain,
    read_pretrained_metadata,
    read_run_config,
    time_steps,
)

ROOT = Path(__file__).resolve().parents[1]

TINY = PretrainConfig(
    epochs=2,
    steps_per_epoch=15,
    batch=128,
    min_bands=3,
    max_bands=6,
    val_samples=256,
    val_chunk=128,
    seed=7,
    threads=1,
    device="cpu",
)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> pt.PretrainResult:
    return pretrain(TINY, tmp_path_factory.mktemp("pretrain") / "run", progress=False)


def test_tiny_run_lowers_validation_loss(tiny_run: pt.PretrainResult) -> None:
    initial = tiny_run.initial_val_loss
    losses = [rec["val_loss"] for rec in tiny_run.history]
    print(f"validation recovery loss per epoch: {[round(v, 4) for v in losses]}")
    # Random weights give 0.5-1 on this bank (seed 7: 0.57); 30 small SGD steps reach ~0.35.
    assert tiny_run.final_val_loss < 0.75 * initial, losses
    assert initial - tiny_run.final_val_loss > 0.1, losses
    assert tiny_run.best_val_loss == min(losses[1:])
    assert tiny_run.epochs_done == 2
    assert tiny_run.steps_done == 30


def test_log_and_files(tiny_run: pt.PretrainResult) -> None:
    lines = tiny_run.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert [r["step"] for r in records] == [0, 15, 30]
    assert records[0]["train_loss"] is None
    for rec in records[1:]:
        for key in ("train_loss", "val_loss", "val_candidate_mse", "val_value_mse", "lr",
                    "seconds"):
            assert math.isfinite(rec[key]), key
        assert rec["val_loss"] == pytest.approx(
            0.5 * rec["val_candidate_mse"] + rec["val_value_mse"]
        )
    assert records[-1]["lr"] == TINY.lr
    meta = read_pretrained_metadata(tiny_run.sensei_path)
    assert meta["seed"] == TINY.seed
    assert meta["pretrain_config"] == TINY.to_dict()
    assert meta["steps"] == 15 * tiny_run.best_epoch
    assert meta["val_loss"] == tiny_run.best_val_loss
    assert meta["hardware"]["device"] == "cpu"
    assert "time" in meta
    assert read_run_config(tiny_run.out_dir) == TINY


def test_checkpoint_loads_back_strictly(tiny_run: pt.PretrainResult) -> None:
    sensei = load_pretrained_sensei(tiny_run.sensei_path)
    assert isinstance(sensei, SEnSeI)
    stored = _tensors(tiny_run.sensei_path)
    assert set(stored) == set(sensei.state_dict())
    for name, value in sensei.state_dict().items():
        assert torch.equal(value, stored[name]), name
    fresh = SEnSeI()
    fresh.load_state_dict(stored, strict=True)  # a plain SEnSeI takes the file as is

    # last.safetensors holds SEnSeI + heads: recovery_loss on them reproduces the logged value,
    # so the training loop's validation is exactly the library's recovery loss.
    last_sensei = load_pretrained_sensei(tiny_run.last_path)
    heads = PretrainHeads()
    last = _tensors(tiny_run.last_path)
    heads.load_state_dict({k[6:]: v for k, v in last.items() if k.startswith("heads.")})
    with pt._torch_threads(1):
        val = recovery_loss(last_sensei, heads, samples=TINY.val_samples, seed=TINY.val_seed,
                            chunk=TINY.val_chunk)
    assert val["loss"] == pytest.approx(tiny_run.history[-1]["val_loss"], rel=1e-6)


def test_corrupted_checkpoint_is_rejected(tiny_run: pt.PretrainResult, tmp_path: Path) -> None:
    data = bytearray(tiny_run.sensei_path.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_pretrained_sensei(bad)
    with pytest.raises(CheckpointError):
        load_pretrained_sensei(tmp_path / "missing.safetensors")


def test_refuses_to_overwrite_a_run(tiny_run: pt.PretrainResult) -> None:
    before = tiny_run.sensei_path.read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(TINY, tiny_run.out_dir, progress=False)
    assert tiny_run.sensei_path.read_bytes() == before
    with pytest.raises(ValueError, match="different recipe"):
        pretrain(replace(TINY, lr=0.1), tiny_run.out_dir, resume=True, progress=False)
    with pytest.raises(ValueError, match="mutually exclusive"):
        pretrain(TINY, tiny_run.out_dir, resume=True, overwrite=True, progress=False)


def test_overwrite_and_missing_resume(tmp_path: Path) -> None:
    small = replace(TINY, epochs=1, steps_per_epoch=2, batch=16, val_samples=32)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        pretrain(small, tmp_path / "none", resume=True, progress=False)
    first = pretrain(small, tmp_path / "run", progress=False)
    second = pretrain(replace(small, seed=8), tmp_path / "run", overwrite=True, progress=False)
    assert first.history[0]["val_loss"] != second.history[0]["val_loss"]
    assert len(second.log_path.read_text().splitlines()) == 2
    # A folder without a run in it is fine.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    pretrain(small, other, progress=False)
    assert (other / "notes.txt").read_text() == "keep"


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    config = replace(TINY, steps_per_epoch=6, batch=64, val_samples=64, val_chunk=64, l1=1e-5)
    straight = pretrain(config, tmp_path / "straight", progress=False)
    pretrain(replace(config, epochs=1), tmp_path / "split", progress=False)
    resumed = pretrain(config, tmp_path / "split", resume=True, progress=False)

    a, b = _tensors(straight.last_path), _tensors(resumed.last_path)
    assert set(a) == set(b)
    assert any(k.startswith("optimizer.") for k in a) and "rng.data" in a
    for name in a:
        assert torch.equal(a[name], b[name]), name
    best_a, best_b = _tensors(straight.sensei_path), _tensors(resumed.sensei_path)
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)

    def strip(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in rec.items() if k != "seconds"} for rec in history]

    assert strip(straight.history) == strip(resumed.history)
    assert len(resumed.log_path.read_text().splitlines()) == 3
    # Resuming a finished run trains nothing and reports the same result.
    again = pretrain(None, tmp_path / "split", resume=True, progress=False)
    assert again.steps_done == resumed.steps_done
    assert again.best_val_loss == resumed.best_val_loss


def test_config_json_round_trip(tmp_path: Path) -> None:
    config = replace(TINY, l1=1e-5, device="auto")
    assert PretrainConfig.from_json(config.to_json()) == config
    path = tmp_path / "c.json"
    config.to_json(path)
    assert PretrainConfig.from_json(path) == config
    assert PretrainConfig.from_json(str(path)) == config
    with pytest.raises(ValueError, match="unknown"):
        PretrainConfig.from_dict({**config.to_dict(), "epoch": 3})
    for bad in (
        {"max_bands": 2},
        {"batch": 0},
        {"lr": 0.0},
        {"factor": 1.0},
        {"momentum": 1.0},
        {"min_lr": 1.0},
        {"device": "nonsense"},
    ):
        with pytest.raises(ValueError):
            replace(config, **bad)


def test_plateau_follows_keras() -> None:
    plateau = pt._Plateau(lr=0.01, factor=0.25, patience=2, min_lr=2e-5, min_delta=1e-4)
    reductions = [plateau.step(v) for v in (1.0, 0.9, 0.95, 0.89995, 0.8, 0.8, 0.8, 0.8, 0.8)]
    # Keras: reduce after `patience` epochs without an improvement larger than min_delta.
    assert reductions == [False, False, False, True, False, False, True, False, True]
    assert plateau.lr == pytest.approx(0.01 * 0.25**3)
    for _ in range(20):
        plateau.step(0.8)
    assert plateau.lr == 2e-5


def test_l1_penalty_covers_the_five_v1_layers() -> None:
    sensei, heads = SEnSeI(), PretrainHeads()
    expected = sum(
        layer.weight.abs().sum()
        for layer in (
            sensei.descriptor_block.final,
            sensei.permutation_block.stack.final,
            sensei.combined_block.final,
            heads.candidate_embedding.final,
            heads.real_embedding.final,
        )
    )
    assert torch.equal(l1_penalty(sensei, heads), expected)


def test_time_steps_smoke() -> None:
    times = time_steps(replace(TINY, batch=16), n_bands=(3, 5), repeats=1, warmup=0)
    assert set(times) == {3, 5} and all(t > 0 for t in times.values())


def _cli_args(out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--out", str(out), "--epochs", "1", "--steps-per-epoch", "3",
            "--batch", "16", "--seed", "3", "--device", "cpu", "--threads", "1", "--quiet",
            *extra]


def test_add_parser_on_a_fresh_parser(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="xsensei")
    add_parser(parser.add_subparsers(dest="command", required=True))
    config = replace(PretrainConfig(), max_bands=5, val_samples=32, val_chunk=32)
    config_path = tmp_path / "recipe.json"
    config.to_json(config_path)
    out = tmp_path / "cli"
    args = parser.parse_args(_cli_args(out, "--config", str(config_path)))
    assert args.func(args) == 0
    assert "pre-trained SEnSeI" in capsys.readouterr().out
    stored = read_run_config(out)
    assert (stored.epochs, stored.steps_per_epoch, stored.batch, stored.max_bands) == (1, 3, 16, 5)
    with pytest.raises(FileExistsError):
        args.func(args)
    # --resume alone continues the stored recipe; --epochs extends it.
    args = parser.parse_args(["pretrain", "--out", str(out), "--resume", "--epochs", "2",
                              "--quiet"])
    assert args.func(args) == 0
    assert read_run_config(out).epochs == 2
    assert len((out / "log.jsonl").read_text().splitlines()) == 3


def test_cli_module_entry_point(tmp_path: Path) -> None:
    if "pretrain" not in (ROOT / "xsensei" / "cli.py").read_text():
        pytest.skip("`xsensei pretrain` is not wired into xsensei/cli.py yet")
    config_path = tmp_path / "recipe.json"
    replace(PretrainConfig(), max_bands=4, val_samples=32, val_chunk=32).to_json(config_path)
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "xsensei.cli", *_cli_args(out, "--config", str(config_path))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "sensei.safetensors").is_file()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "--resume" in proc.stderr


@pytest.mark.parametrize("name", ["pretrain_cpu_30min.json", "pretrain_gpu_v1.json"])
def test_recipe_configs_parse(name: str) -> None:
    config = PretrainConfig.from_json(ROOT / "training" / name)
    assert (config.min_bands, config.max_bands, config.lr, config.momentum) == (3, 13, 0.01, 0.75)
    assert (config.patience, config.factor, config.min_lr) == (2, 0.25, 2e-5)
