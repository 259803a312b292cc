"""Supervised training: loss goes down, exact resume, no clobbering, shipped-format output,
held-out sensors never trained on.

Runs are tiny (PixelNet, 32 px crops, a few dozen steps, one torch thread: on a shared 2-core
machine two threads make these small steps many times slower).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from xsensei.nn.model import CloudMaskModel
from xsensei.training.averaging import WeightAverage
from xsensei.training.train import (
    BandsetSampler,
    LRSchedule,
    TrainConfig,
    TrainResult,
    _batches,
    _build_model,
    _training_data,
    add_parser,
    predict_valset,
    recalibrate_batchnorm,
    render_valset,
    train,
    validate,
)
from xsensei.training.unreached_taps import find_unreached_taps
from xsensei.weights.checkpoint import read_metadata, save_model

HOLDOUT = ("landsat-7", "sentinel-3a-slstr", "sentinel-3b-slstr")


def tiny_config(**changes: object) -> TrainConfig:
    """PixelNet on 32 px crops; lr 0.01 so that 40 steps are enough to see learning."""
    base: dict[str, object] = dict(
        name="tiny", segmenter="pixelnet", crop=32, batch=4, steps=40, lr=0.01,
        warmup_steps=4, val_scenes=2, val_size=32, val_sensors=("landsat-8",),
        val_unseen=("landsat-7",), holdout_sensors=HOLDOUT, eval_every=20,
        checkpoint_every=20, log_every=1, threads=1, workers=0, precision="fp32",
        steps_per_epoch=16, seed=3,
    )
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    torch.set_num_threads(1)
    return train(tiny_config(), tmp_path_factory.mktemp("tiny") / "run", progress=False)


def test_config_takes_one_store_as_a_string_and_paths_as_path_objects(tmp_path: Path) -> None:
    assert tiny_config(patch_stores="l8.zarr").patch_stores == ("l8.zarr",)  # not 7 letters
    cfg = tiny_config(patch_stores=[tmp_path / "a.zarr"], init_model=tmp_path / "m.safetensors")
    assert cfg.patch_stores == (str(tmp_path / "a.zarr"),)
    assert cfg.init_model == str(tmp_path / "m.safetensors")
    cfg.to_json(tmp_path / "cfg.json")  # JSON-safe
    assert TrainConfig.from_json(tmp_path / "cfg.json") == cfg


def test_config_json_round_trip(tmp_path: Path) -> None:
    cfg = tiny_config(segmenter="deeplabv3plus", segmenter_kwargs={"encoder_output_stride": 16},
                      augment={"noise_sigma": 0.01}, synthetic={"tau_thin": 2.5},
                      patch_stores=("a.zarr",), bands=(3, None), precision="auto")
    path = tmp_path / "cfg.json"
    cfg.to_json(path)
    back = TrainConfig.from_json(path)
    assert back == cfg
    assert back.bands == (3, None) and isinstance(back.classes, tuple)
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"crops": 64})
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(segmenter="deeplabv3plus", crop=40,
                    segmenter_kwargs={"encoder_output_stride": 16})
    with pytest.raises(ValueError, match="holdout"):
        tiny_config(val_sensors=("landsat-7",))
    with pytest.raises(ValueError, match=r"random_mwir_prob must lie in \[0, 1\], got 1.5"):
        tiny_config(random_mwir_prob=1.5)


def test_sampler_draws_mid_infrared_bands_when_asked() -> None:
    """random_mwir_prob reaches random_bandset; 0 (the default) keeps the old draws."""

    def thermal_centres(**changes: object) -> np.ndarray:
        sampler = BandsetSampler.from_config(tiny_config(sensor_prob=0.0, **changes))
        bands = [sampler(np.random.default_rng([0, 0, i])) for i in range(300)]
        return np.concatenate([b.wavelengths_nm[b.is_thermal, 1] for b in bands])

    old, new = thermal_centres(), thermal_centres(random_mwir_prob=0.5)
    assert old.size > 100 and (old >= 8000).all()
    mwir = (new >= 3500) & (new <= 4100)
    assert 0.35 < mwir.mean() < 0.65


def test_sampler_thermal_share_follows_random_thermal_prob() -> None:
    """random_thermal_prob sets the share of thermal random bands; 0.1 is the old default."""

    def thermal_share(**changes: object) -> float:
        sampler = BandsetSampler.from_config(tiny_config(sensor_prob=0.0, **changes))
        bands = [sampler(np.random.default_rng([0, 0, i])) for i in range(400)]
        return float(np.mean(np.concatenate([b.is_thermal for b in bands])))

    assert TrainConfig().random_thermal_prob == 0.1
    assert 0.07 < thermal_share() < 0.13
    assert 0.35 < thermal_share(random_thermal_prob=0.4) < 0.45
    assert thermal_share(random_thermal_prob=0.0) == 0.0
    with pytest.raises(ValueError, match=r"random_thermal_prob must lie in \[0, 1\]"):
        tiny_config(random_thermal_prob=-0.1)


def test_predict_valset_is_what_validate_and_the_product_score() -> None:
    """render_valset + predict_valset (public, used by the sensor-independence benchmark) give
    the flags validate scores and the product writes for the same images."""
    import xsensei
    from xsensei.training.metrics import ConfusionMatrix
    from xsensei.training.synthetic import SceneGenerator, SyntheticConfig, sensor_bandset

    model = xsensei.load_model("fast")  # the shipped PixelNet: trained, and per pixel
    gen = SceneGenerator(SyntheticConfig(size=40), seed=11)
    scenes = [gen.scene(i) for i in range(3)]
    bands = sensor_bandset("landsat-8")
    vs = render_valset(gen, scenes, bands, group="unseen", sensor="landsat-8")
    assert vs.values.shape == (3, len(bands), 40, 40) and vs.labels.shape == (3, 40, 40)
    flags = torch.cat([f for _, _, f in predict_valset(model, vs, batch=2)])
    assert flags.shape == (3, 40, 40) and len(np.unique(flags.numpy())) >= 2
    cm = ConfusionMatrix().update(vs.labels, flags)
    assert validate(model, [vs], batch=2)["sensors"]["landsat-8"]["F1"] == cm.scores()["F1"]
    # per-pixel model: the product's windowed mask (same flag values) is identical to the
    # flags of what it feeds the network: this model's checkpoint leaves thermal bands out
    keep = torch.as_tensor(np.flatnonzero(~bands.is_thermal))
    assert 3 <= len(keep) < len(bands)
    vs_refl = dataclasses.replace(vs, values=vs.values[:, keep], descriptors=vs.descriptors[keep])
    flags_refl = torch.cat([f for _, _, f in predict_valset(model, vs_refl, batch=2)])
    assert not torch.equal(flags_refl, flags)  # the thermal bands change this network's answer
    for i in range(3):
        product = xsensei.cloudmask(vs.values[i].numpy(), np.asarray(bands.wavelengths_nm),
                                    model="fast")
        assert np.array_equal(product, flags_refl[i].numpy())


def test_recipes_parse() -> None:
    """Every supervised recipe in training/ parses, fits the 2-hour budget and holds out the
    sensors the sensor-independence benchmark tests (the shipped chains' data and precision
    are checked against their weights in test_packaged_models.py)."""
    root = Path(__file__).resolve().parents[1] / "training"
    recipes = sorted(f for f in root.glob("*.json") if not f.name.startswith("pretrain"))
    assert len(recipes) >= 4
    for path in recipes:
        cfg = TrainConfig.from_json(path)
        assert cfg.time_budget_s is not None and cfg.time_budget_s <= 2 * 3600, path.name
        assert {"landsat-7", "sentinel-3a-slstr"} <= set(cfg.holdout_sensors), path.name


def test_cosine_schedule() -> None:
    s = LRSchedule("cosine", 1e-3, total_steps=100, warmup_steps=10, min_lr=1e-5)
    lrs = [s.lr(i) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.01)
    p = LRSchedule("plateau", 1e-3, 100, factor=0.25, patience=2, min_lr=2e-5)
    for loss in (1.0, 1.0, 1.0, 0.5, 0.6, 0.6):
        p.observe(loss)
    assert p.lr(50) == pytest.approx(2.5e-4 * 0.25)


def test_tiny_run_reduces_loss(tiny_run: TrainResult) -> None:
    losses = np.array([loss for _, loss in tiny_run.loss_history])
    assert len(losses) == 40 and np.isfinite(losses).all()
    first, last = losses[:10].mean(), losses[-10:].mean()
    print(f"tiny run: loss {first:.3f} -> {last:.3f}, {tiny_run.sec_per_step:.3f} s/step")
    assert last < 0.9 * first, (first, last)
    records = [json.loads(line) for line in (tiny_run.out_dir / "log.jsonl").open()]
    steps = [r for r in records if r["event"] == "step"]
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in steps] == list(range(1, 41))
    assert {"loss", "lr", "sec_per_step", "data_s_per_step"} <= set(steps[0])
    assert [r["step"] for r in evals] == [20, 40]
    for group in ("seen", "unseen"):
        assert {"OA", "BA", "precision", "recall", "F1"} <= set(evals[-1][group])
    assert tiny_run.completed and tiny_run.stopped_by == "steps"


def test_best_checkpoint_loads_and_masks(tiny_run: TrainResult) -> None:
    import xsensei
    from xsensei.training.synthetic import SceneGenerator, SyntheticConfig, sensor_bandset
    from xsensei.weights.checkpoint import read_metadata

    assert tiny_run.best_path is not None and tiny_run.best_path.is_file()
    meta = read_metadata(tiny_run.best_path)
    assert meta["trained"] is True
    prov = meta["provenance"]
    assert prov["data"].startswith("synthetic") and prov["seed"] == 3
    assert prov["steps"] == tiny_run.best_step
    assert prov["generator"]["seed"] == 0 and len(prov["generator"]["source_sha256"]) == 64
    assert {"cpu", "torch", "cpu_capability"} <= set(prov["hardware"]) and prov["wall_time_s"] > 0
    assert meta["inference"] == {"window": 256, "overlap": 64, "thermal_bands": "use"}
    model = xsensei.load_model(tiny_run.best_path)
    assert model.classes == ("clear", "thick_cloud", "thin_cloud", "cloud_shadow")

    bands = sensor_bandset("sentinel-2a")
    scene = SceneGenerator(SyntheticConfig(size=48), seed=9).sample(bands, 0)
    mask = xsensei.cloudmask(scene.image, np.asarray(bands.wavelengths_nm),
                             model=str(tiny_run.best_path))
    assert mask.shape == (48, 48)
    assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3}


def test_holdout_sensors_never_sampled(tiny_run: TrainResult) -> None:
    from xsensei.training.synthetic import sensor_bandset

    cfg = tiny_config()
    sampler = BandsetSampler.from_config(cfg)
    assert not set(sampler.sensors) & set(HOLDOUT)
    held_bands = {tuple(row) for s in HOLDOUT for row in sensor_bandset(s).wavelengths_nm}
    kept_bands = {tuple(row) for s in sampler.sensors for row in sensor_bandset(s).wavelengths_nm}
    only_held = held_bands - kept_bands
    assert only_held  # the assertion below is not vacuous
    sources = set()
    for i in range(400):
        source, bandset = sampler.draw(np.random.default_rng([cfg.seed, 0, i]))
        sources.add(source)
        assert source not in HOLDOUT
        assert not {tuple(row) for row in bandset.wavelengths_nm} & only_held
        assert 3 <= len(bandset)
    assert "random" in sources and len(sources) > 5
    # and in the actual training run: every band set's origin was counted
    assert sum(tiny_run.bandset_sources.values()) == 40 * 4
    assert not set(tiny_run.bandset_sources) & set(HOLDOUT)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from xsensei.weights.checkpoint import load_checkpoint

    model, _ = load_checkpoint(path)
    return model.state_dict()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        # DeepLabv3+: dropout (torch RNG), batch-norm buffers, momentum across the split
        {"segmenter": "deeplabv3plus", "segmenter_kwargs": {"encoder_output_stride": 16},
         "batch": 2, "val_size": 32},
        # precise batch norm before every validation and checkpoint
        {"segmenter": "deeplabv3plus", "segmenter_kwargs": {"encoder_output_stride": 16},
         "batch": 2, "val_size": 32, "precise_bn_batches": 2},
        # weight averaging: the average and the raw weights both cross the split
        {"ema_decay": 0.9},
    ],
    ids=["pixelnet", "deeplab", "deeplab-precise-bn", "pixelnet-ema"],
)
def test_resume_is_exact(tmp_path: Path, changes: dict[str, object]) -> None:
    steps = 8 if changes else 12  # crosses an epoch boundary (steps_per_epoch 4)
    cfg = tiny_config(steps=steps, steps_per_epoch=4, eval_every=3, checkpoint_every=100,
                      val_scenes=1, **changes)
    straight = train(cfg, tmp_path / "a", progress=False)
    first = train(cfg, tmp_path / "b", progress=False, stop_at=steps // 2)
    assert first.stopped_by == "stop_at" and first.step == steps // 2
    second = train(cfg, tmp_path / "b", progress=False, resume=True)
    assert second.step == steps and second.completed
    assert straight.loss_history == first.loss_history + second.loss_history
    a = _weights(tmp_path / "a" / "last.safetensors")
    b = _weights(tmp_path / "b" / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refuses_to_clobber(tmp_path: Path) -> None:
    cfg = tiny_config(steps=2, eval_every=100, checkpoint_every=100, val_scenes=1)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    before = (run / "last.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="resume"):
        train(cfg, run, progress=False)
    assert (run / "last.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="crop"):
        train(cfg.replace(crop=64), run, progress=False, resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(cfg, tmp_path / "empty", progress=False, resume=True)
    (run / "notes.txt").write_text("mine")
    again = train(cfg.replace(seed=4), run, progress=False, overwrite=True)
    assert again.step == 2 and (run / "notes.txt").read_text() == "mine"
    log = [json.loads(line) for line in (run / "log.jsonl").open()]
    assert sum(r["event"] == "start" for r in log) == 1  # the old log went with the old run


def test_a_start_that_failed_before_its_first_step_does_not_block_the_fixed_rerun(
    tmp_path: Path,
) -> None:
    """A typo in init_model is found after config.json is written; the corrected rerun must
    start, not be told to resume a run that never trained."""
    run = tmp_path / "run"
    with pytest.raises(Exception, match="fastt"):
        train(tiny_config(steps=1, val_scenes=1, init_model="fastt"), run, progress=False)
    assert (run / "config.json").is_file()
    result = train(tiny_config(steps=1, eval_every=100, val_scenes=1), run, progress=False)
    assert result.step == 1
    with pytest.raises(FileExistsError, match="resume"):  # a run that trained is kept
        train(tiny_config(steps=1, eval_every=100, val_scenes=1), run, progress=False)


def test_time_budget_stops_with_checkpoint(tmp_path: Path) -> None:
    cfg = tiny_config(steps=10_000, time_budget_s=0.1, eval_every=10_000, val_scenes=1)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.stopped_by == "time_budget" and 1 <= result.step < 10_000
    assert (tmp_path / "run" / "last.state.safetensors").is_file()
    assert result.best_path is not None  # the stop evaluates, so there is a best model
    more = train(cfg.replace(steps=result.step + 1, time_budget_s=None), tmp_path / "run",
                 progress=False, resume=True)
    assert more.step == result.step + 1 and more.completed


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.json"
    tiny_config(steps=3, eval_every=100, val_scenes=1).to_json(recipe)
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    args = parser.parse_args(["train", "--config", str(recipe), "--out", str(out),
                              "--until", "2", "--quiet"])
    assert args.func(args) == 0
    assert "stop_at: step 2/3" in capsys.readouterr().out
    args = parser.parse_args(["train", "--out", str(out), "--resume", "--quiet"])
    assert args.func(args) == 0
    assert "steps: step 3/3" in capsys.readouterr().out
    args = parser.parse_args(["train", "--config", str(recipe), "--out", str(out), "--quiet"])
    with pytest.raises(FileExistsError):
        args.func(args)


def test_init_sensei_is_fine_tuned(tmp_path: Path) -> None:
    from xsensei.training.pretrain import PretrainConfig, load_pretrained_sensei, pretrain

    pre = pretrain(PretrainConfig(epochs=1, steps_per_epoch=2, batch=8, val_samples=16,
                                  val_chunk=16, threads=1), tmp_path / "pre", progress=False)
    start = load_pretrained_sensei(pre.sensei_path).state_dict()
    cfg = tiny_config(steps=2, eval_every=100, val_scenes=1, init_sensei=str(pre.sensei_path))
    result = train(cfg, tmp_path / "run", progress=False)
    trained = _weights(result.last_path)
    sensei = {k.removeprefix("sensei."): v for k, v in trained.items() if k.startswith("sensei.")}
    assert sensei.keys() == start.keys()
    changed = [k for k in start if not torch.equal(start[k], sensei[k])]
    assert changed  # fine-tuned, not frozen ...
    # two steps at lr <= 0.005 move weights by <= ~0.02; a fresh init differs by ~0.2-0.5
    close = [k for k in start if torch.allclose(start[k], sensei[k], atol=5e-2)]
    assert len(close) == len(start)  # ... starting from the pre-trained weights
    from xsensei.weights.checkpoint import read_metadata

    init = read_metadata(result.last_path)["provenance"]["init_sensei"]
    assert init["path"] == str(pre.sensei_path) and len(init["sha256"]) == 64


def test_real_patches_mix_in_without_held_out_sensors(tmp_path: Path) -> None:
    from xsensei.training.patches import Patch, build_store, make_metadata
    from xsensei.training.synthetic import sensor_bandset

    rng = np.random.default_rng(0)
    patches = []
    for i, sensor in enumerate(["landsat-8", "LANDSAT_7", "landsat-8", "L7"]):
        nm = np.asarray(sensor_bandset(sensor).wavelengths_nm)[:6]
        image = rng.uniform(0, 0.5, (6, 36, 36)).astype(np.float32)
        label = rng.integers(0, 4, (36, 36)).astype(np.uint8)
        patches.append(Patch(image, label, nm, make_metadata(sensor=sensor, scene_id=str(i))))
    store = build_store(tmp_path / "real.zarr", patches)
    cfg = tiny_config(steps=6, eval_every=100, val_scenes=1, patch_stores=(str(store.path),),
                      real_fraction=0.5)
    with pytest.warns(UserWarning, match=r"2 of 4 patches are from held-out sensors "
                                         r"\(L7, LANDSAT_7\) and are left out"):
        result = train(cfg, tmp_path / "run", progress=False)
    real = {k: v for k, v in result.bandset_sources.items() if k.startswith("real:")}
    assert set(real) == {"real:landsat-8"} and sum(real.values()) >= 3
    from xsensei.weights.checkpoint import read_metadata

    data = read_metadata(result.last_path)["provenance"]["data"]
    assert data.endswith(f"plus real labelled patches (50%) from {store.path} (2 patches)")
    with pytest.raises(ValueError, match=r"crop 64 px is larger than the patches of .*"
                                         r"\(36 x 36 px\)"):
        train(cfg.replace(crop=64), tmp_path / "run64", progress=False)
    only_l7 = build_store(tmp_path / "l7.zarr", patches[1::2])
    with pytest.raises(ValueError, match=r"all 2 patches are from held-out sensors.*"
                                         r"remove them from holdout_sensors"):
        train(cfg.replace(patch_stores=(str(only_l7.path),)), tmp_path / "run7",
              progress=False)
    with pytest.raises(KeyError, match="landsat-77"):
        tiny_config(holdout_sensors=("landsat-77",))


def test_generic_cloud_labels_teach_a_four_class_model_cloud(tmp_path: Path) -> None:
    """Labels "cloud" (thick or thin unknown), as most real label sets have: a 4-class model
    trained on them alone calls the cloud pixels cloud (it used to ignore them and learn
    clear everywhere)."""
    from xsensei.training.patches import Patch, build_store, make_metadata
    from xsensei.training.synthetic import sensor_bandset

    rng = np.random.default_rng(0)
    nm = np.asarray(sensor_bandset("landsat-8").wavelengths_nm)[1:7]
    label = np.zeros((36, 36), np.uint8)
    label[:, 18:] = 4  # cloud, thickness unknown
    patches = []
    for i in range(4):
        image = rng.uniform(0.02, 0.12, (6, 36, 36)).astype(np.float32)
        image[:, :, 18:] += 0.6  # bright cloud
        patches.append(Patch(image, label, nm, make_metadata(sensor="landsat-8",
                                                              scene_id=str(i))))
    store = build_store(tmp_path / "cloud.zarr", patches)
    cfg = tiny_config(steps=60, eval_every=100, val_scenes=1, patch_stores=(str(store.path),),
                      real_fraction=1.0)
    result = train(cfg, tmp_path / "run", progress=False)
    import xsensei

    prob = xsensei.cloudmask(patches[0].image, nm, model=str(result.last_path),
                             output="probability")
    cloudy = prob[1] + prob[2]  # thick + thin
    assert cloudy[:, 20:].mean() > 0.8 and cloudy[:, :16].mean() < 0.2


def test_init_model_fine_tunes_a_whole_checkpoint(tmp_path: Path) -> None:
    first = train(tiny_config(steps=2, eval_every=100, val_scenes=1), tmp_path / "a",
                  progress=False)
    start = _weights(first.last_path)
    cfg = tiny_config(steps=1, eval_every=100, val_scenes=1, init_model=str(first.last_path))
    result = train(cfg, tmp_path / "b", progress=False)
    tuned = _weights(result.last_path)
    assert tuned.keys() == start.keys()
    assert any(not torch.equal(start[k], tuned[k]) for k in start)
    weights = [k for k in start if "running_" not in k and "num_batches" not in k]
    assert all(torch.allclose(start[k], tuned[k], atol=5e-2) for k in weights)
    counters = [k for k in start if k.endswith("num_batches_tracked")]
    assert counters and all(int(tuned[k]) == int(start[k]) + 1 for k in counters)  # continued
    from xsensei.weights.checkpoint import read_metadata

    init = read_metadata(result.last_path)["provenance"]["init_sensei"]
    assert init["model"] == str(first.last_path) and len(init["sha256"]) == 64

    with pytest.raises(ValueError, match=r"differs from the recipe \(segmenter.name: model "
                                         r"'pixelnet', recipe 'deeplabv3plus'\)"):
        train(tiny_config(segmenter="deeplabv3plus", init_model=str(first.last_path)),
              tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="init_sensei or init_model, not both"):
        tiny_config(init_model="x", init_sensei="y")


def test_fine_tune_keeps_the_parents_thermal_policy_unless_the_recipe_names_one(
    tmp_path: Path,
) -> None:
    """A parent that ignores thermal bands (as sensei-pixelnet) makes fine-tunes that do too."""
    from xsensei.weights.checkpoint import load_model, read_metadata, save_model

    first = train(tiny_config(steps=1, eval_every=100, val_scenes=1), tmp_path / "a",
                  progress=False)
    parent = save_model(load_model(first.last_path), tmp_path / "parent.safetensors",
                        inference={"window": 256, "overlap": 64, "thermal_bands": "ignore"})

    def policies(**kw: object) -> set[str]:
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        result = train(tiny_config(steps=1, eval_every=1, val_scenes=1, **kw), out,
                       progress=False)
        return {read_metadata(p)["inference"]["thermal_bands"]
                for p in (result.last_path, result.best_path)}

    assert policies(init_model=str(parent)) == {"ignore"}
    assert policies(init_model=str(parent), thermal_bands="use") == {"use"}
    assert policies(thermal_bands="ignore") == {"ignore"}
    assert read_metadata(first.last_path)["inference"]["thermal_bands"] == "use"
    with pytest.raises(ValueError, match="thermal_bands must be one of"):
        tiny_config(thermal_bands="drop")


def test_precise_batchnorm_replaces_running_averages_exactly() -> None:
    """Recalibrated statistics depend on the batches only (not on the buffers before), leave
    weights and the torch RNG alone, and equal the plain average of per-batch statistics."""
    cfg = tiny_config(segmenter="deeplabv3plus", segmenter_kwargs={"encoder_output_stride": 16},
                      batch=2)
    batches = list(itertools.islice(_batches(_training_data(cfg), cfg, 0), 3))
    torch.manual_seed(0)
    model = _build_model(cfg)
    model.train()
    with torch.no_grad():  # some running averages to replace
        model(batches[0]["values"], batches[0]["descriptors"], batches[0]["band_mask"])
    model.eval()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    first = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    inputs: list[torch.Tensor] = []
    hook = first.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
    rng = torch.get_rng_state()
    assert recalibrate_batchnorm(model, batches) == 3
    hook.remove()
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training and first.momentum == 0.1
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)
    torch.testing.assert_close(first.running_mean, expected, rtol=1e-5, atol=1e-6)
    once = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_batchnorm(model, batches)
    assert all(torch.equal(once[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="precise_bn_batches"):
        tiny_config(precise_bn_batches=-1)


def test_hardware_record_names_the_cpu_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 weights depend on the kernels torch dispatches to; the record must say which."""
    from xsensei._hardware import KERNEL_ENV, describe_hardware

    for name in KERNEL_ENV:
        monkeypatch.delenv(name, raising=False)
    plain = describe_hardware(torch.device("cpu"))
    assert plain["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "kernel_env" not in plain
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert describe_hardware(torch.device("cpu"))["kernel_env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_freeze_segmenter_trains_sensei_only(tmp_path: Path) -> None:
    """The segmenter's weights and batch-norm statistics stay exactly as loaded."""
    first = train(tiny_config(steps=2, eval_every=100, val_scenes=1), tmp_path / "a",
                  progress=False)
    start = _weights(first.last_path)
    cfg = tiny_config(steps=3, eval_every=2, val_scenes=1, init_model=str(first.last_path),
                      freeze_segmenter=True)
    tuned = _weights(train(cfg, tmp_path / "b", progress=False).last_path)
    seg = [k for k in start if k.startswith("segmenter.")]
    sensei = [k for k in start if k.startswith("sensei.")]
    assert seg and sensei
    assert all(torch.equal(start[k], tuned[k]) for k in seg)
    assert any(not torch.equal(start[k], tuned[k]) for k in sensei)
    with pytest.raises(ValueError, match="precise_bn_batches"):
        tiny_config(freeze_segmenter=True, precise_bn_batches=4)


def test_init_partial_adds_a_head_and_train_only_trains_it_alone(tmp_path: Path) -> None:
    """A DeepLabv3+ checkpoint grows an edge head (init_partial); with train_only the head
    alone learns, and every loaded tensor, batch-norm statistics included, stays as loaded."""
    torch.manual_seed(0)
    kwargs = {"encoder_output_stride": 16}
    base = save_model(CloudMaskModel("deeplabv3plus", segmenter_kwargs=kwargs),
                      tmp_path / "base.safetensors")
    cfg = tiny_config(segmenter="deeplabv3plus_refined", segmenter_kwargs=kwargs, steps=3,
                      eval_every=2, val_scenes=1, init_model=str(base), init_partial=True,
                      train_only=("segmenter.refine",))
    run = train(cfg, tmp_path / "run", progress=False)
    tuned = _weights(run.last_path)
    start = _weights(base)
    assert set(start) < set(tuned)
    # as loaded, except the taps no 32 px crop reaches (zeroed before training, listed in the
    # provenance): every ASPP branch and the dilated last encoder stages at 2 x 2 maps
    unreached = find_unreached_taps(CloudMaskModel("deeplabv3plus", segmenter_kwargs=kwargs
                                                   ).segmenter, (1, 64, 32, 32))
    unreached = {f"segmenter.{k}": m for k, m in unreached.items()}
    assert "segmenter.decoder.aspp.0.convs.1.0.0.weight" in unreached
    assert all(torch.equal(start[k], tuned[k]) for k in start if k not in unreached)
    for key, mask in unreached.items():
        assert (tuned[key][..., mask] == 0).all() and (start[key][..., mask] != 0).any()
        assert torch.equal(tuned[key][..., ~mask], start[key][..., ~mask])
    zeroed = read_metadata(run.last_path)["provenance"]["zeroed_unreached_taps"]
    assert set(zeroed) == set(unreached)
    head = [k for k in tuned if k.startswith("segmenter.refine.") and k.endswith("weight")]
    assert head and all(tuned[k].abs().sum() > 0 for k in head)  # the zero-init layer learnt
    with pytest.raises(ValueError, match="does not fit"):
        train(tiny_config(segmenter="deeplabv3plus_refined", segmenter_kwargs=kwargs,
                          init_model=str(save_model(CloudMaskModel("pixelnet"),
                                                    tmp_path / "px.safetensors")),
                          init_partial=True), tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="no module 'segmenter.head'"):
        train(cfg.replace(train_only=("segmenter.head",)), tmp_path / "typo", progress=False)
    with pytest.raises(ValueError, match="give init_model"):
        tiny_config(init_partial=True)
    with pytest.raises(ValueError, match="cannot be combined"):
        tiny_config(train_only=("segmenter",), precise_bn_batches=2)


def test_weight_average_follows_its_closed_form() -> None:
    """After n updates with a constant model the average is that model up to keep**n of the
    start; integer buffers are copied, not averaged."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightAverage(net, decay=0.5)
    start = {k: v.clone() for k, v in ema.average.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].num_batches_tracked.fill_(7)
    keeps = []
    for _ in range(3):
        keeps.append(ema.rate())
        ema.update(net)
    assert keeps == [0.1, 2 / 11, 3 / 12]  # warm-up below the decay of 0.5
    left = float(np.prod(keeps))
    avg = ema.average.state_dict()
    for name, value in net.state_dict().items():
        if value.is_floating_point():
            expected = value + left * (start[name] - value)
            assert torch.allclose(avg[name], expected, atol=1e-6), name
    assert int(avg["1.num_batches_tracked"]) == 7
    assert not any(p.requires_grad for p in ema.average.parameters())
    with pytest.raises(ValueError, match="decay"):
        ema.load_state_dict({"decay": 0.9, "updates": 3})
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        WeightAverage(net, decay=1.0)


def test_ema_run_saves_the_average(tmp_path: Path) -> None:
    """last.safetensors is the averaged network; the raw weights live in the state file."""
    from safetensors.torch import load_file

    cfg = tiny_config(steps=6, eval_every=3, checkpoint_every=100, val_scenes=1, ema_decay=0.9)
    run = train(cfg, tmp_path / "ema", progress=False)
    plain = train(cfg.replace(ema_decay=None), tmp_path / "plain", progress=False)
    averaged = _weights(run.last_path)
    raw = {k[len("model."):]: v for k, v in
           load_file(str(tmp_path / "ema" / "last.state.safetensors")).items()
           if k.startswith("model.")}
    assert raw.keys() == averaged.keys()
    # same trajectory as the plain run (averaging does not touch training) ...
    assert all(torch.equal(raw[k], v) for k, v in _weights(plain.last_path).items())
    # ... but a different network is saved
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw
               if raw[k].is_floating_point())
    with pytest.raises(ValueError, match="ema_decay"):
        tiny_config(ema_decay=1.5)
    with pytest.raises(ValueError, match="precise_bn_batches"):
        tiny_config(ema_decay=0.99, precise_bn_batches=2)
