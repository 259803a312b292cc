"""The weights shipped inside the package: selectable by name, honest metadata, real scores."""

from __future__ import annotations

from pathlib import Path

import pytest

import xsensei
from xsensei.training.evaluate import evaluate_npz
from xsensei.weights.checkpoint import packaged_models, read_metadata

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
SHIPPED = {"sensei-deeplab": "deeplabv3plus", "sensei-pixelnet": "pixelnet"}


@pytest.mark.parametrize(("name", "segmenter"), SHIPPED.items())
def test_shipped_model_says_what_it_was_trained_on(name: str, segmenter: str) -> None:
    meta = read_metadata(packaged_models()[name])
    assert meta["name"] == name
    assert meta["trained"] is True
    prov = meta["provenance"]
    assert prov["data"].startswith("synthetic")
    assert prov["generator"]["module"] == "xsensei.training.synthetic"
    assert prov["steps"] > 0 and prov["best_step"] is not None
    parent = prov.get("parent")
    if parent is not None:  # a fine-tune says what it started from, and that is synthetic too
        assert parent["provenance"]["data"].startswith("synthetic")
        assert prov["init_sensei"]["sha256"]  # the parent file's digest
    assert {"landsat-7", "sentinel-3a-slstr"} <= set(prov["holdout_sensors"])
    assert meta["architecture"]["segmenter"]["name"] == segmenter


RECIPES = Path(__file__).resolve().parents[1] / "training"
#: (model, recipe that trained its weights, recipe of its parent or None)
RECIPE_OF = [("sensei-deeplab", "default_deeplab_finetune.json", "default_deeplab.json"),
             ("sensei-pixelnet", "fast_pixelnet.json", None)]


@pytest.mark.parametrize(("name", "recipe", "parent_recipe"), RECIPE_OF)
def test_recipes_draw_the_data_the_shipped_weights_record(
        name: str, recipe: str, parent_recipe: str | None) -> None:
    """Re-running a recipe must draw the shipped weights' training scenes: same generator
    settings and physics version (generator 1.0 for the version-1 models) and precision."""
    from xsensei.training.synthetic import SyntheticConfig
    from xsensei.training.train import TrainConfig, _generator_info, _synthetic_config

    prov = read_metadata(packaged_models()[name])["provenance"]
    pairs = [(prov, recipe)]
    if parent_recipe is not None:
        pairs.append((prov["parent"]["provenance"], parent_recipe))
    for recorded, file in pairs:
        cfg = TrainConfig.from_json(RECIPES / file)
        trained = SyntheticConfig.from_record(recorded["generator"])
        assert _synthetic_config(cfg, cfg.crop) == trained, file
        assert _generator_info(cfg)["version"] == trained.physics, file
        assert cfg.synthetic_seed == recorded["generator"]["seed"], file
        if cfg.precision != "auto":
            assert cfg.precision == recorded["precision"], file
    # the version-1 models were trained on generator 1.0, version 2 on 1.1
    assert SyntheticConfig.from_record(prov["generator"]).physics == (
        "1.1" if parent_recipe else "1.0")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_by_name(name: str) -> None:
    model = xsensei.load_model(name)
    assert model.classes == ("clear", "thick_cloud", "thin_cloud", "cloud_shadow")
    assert not model.training


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "scene", "min_f1"),
    # Measured scores (docs/model-card.md) minus a margin for thread-count rounding on
    # near-ties; the default model goes through model="default", i.e. cloudmask()'s default.
    [
        ("default", "ukis_sentinel2_512.npz", 87.8),  # measured 88.3
        ("default", "38cloud_l8_patch192_384.npz", 89.0),  # measured 89.6
        ("fast", "ukis_sentinel2_512.npz", 88.6),  # measured 89.1
        ("fast", "38cloud_l8_patch192_384.npz", 88.0),  # measured 88.6
    ],
)
def test_shipped_scores_on_real_labelled_scenes(model: str, scene: str, min_f1: float) -> None:
    result = evaluate_npz(REAL / scene, model=model)
    assert result["F1"] >= min_f1, result
