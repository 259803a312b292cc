"""The weights shipped inside the package: selectable by name, honest metadata, real scores."""

from __future__ import annotations

from pathlib import Path

import pytest

import xsensei
from xsensei.training.evaluate import evaluate_npz
from xsensei.weights.checkpoint import packaged_models, read_metadata

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
SHIPPED = {"sensei-deeplab": "deeplabv3plus_refined", "sensei-pixelnet": "pixelnet"}


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
#: model -> the recipes of its training chain, the shipped stage first, then its parent's ...
RECIPE_CHAIN = {
    "sensei-deeplab": ("default_deeplab_refine.json", "default_deeplab_distill.json",
                       "default_deeplab_finetune.json", "default_deeplab.json"),
    "sensei-pixelnet": ("fast_pixelnet.json",),
}


@pytest.mark.parametrize(("name", "recipes"), RECIPE_CHAIN.items())
def test_recipes_draw_the_data_the_shipped_weights_record(
        name: str, recipes: tuple[str, ...]) -> None:
    """Re-running each recipe of a model's chain must draw the scenes that stage was trained
    on: same generator settings and physics version, seed and precision."""
    from xsensei.training.synthetic import SyntheticConfig
    from xsensei.training.train import TrainConfig, _generator_info, _synthetic_config

    recorded = read_metadata(packaged_models()[name])["provenance"]
    physics = []
    for file in recipes:
        cfg = TrainConfig.from_json(RECIPES / file)
        trained = SyntheticConfig.from_record(recorded["generator"])
        assert _synthetic_config(cfg, cfg.crop) == trained, file
        assert _generator_info(cfg)["version"] == trained.physics, file
        assert cfg.synthetic_seed == recorded["generator"]["seed"], file
        if cfg.precision != "auto":
            assert cfg.precision == recorded["precision"], file
        physics.append(trained.physics)
        recorded = recorded.get("parent", {}).get("provenance")
    assert recorded is None  # the chain names every stage the weights went through
    # the version-1 models (the root of each chain) were trained on generator 1.0
    assert physics[-1] == "1.0" and all(p == "1.1" for p in physics[:-1])


def test_shipped_thermal_policies() -> None:
    """The fast model leaves thermal bands out (they cost it ~11 F1 on synthetic Landsat 8
    scenes, model card); the default uses them."""
    from xsensei.weights.checkpoint import thermal_policy

    policy = {n: thermal_policy(read_metadata(p)["inference"])
              for n, p in packaged_models().items()}
    assert policy == {"sensei-deeplab": "use", "sensei-pixelnet": "ignore"}


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
        ("default", "ukis_sentinel2_512.npz", 88.9),  # measured 89.4
        ("default", "38cloud_l8_patch192_384.npz", 91.7),  # measured 92.2
        ("fast", "ukis_sentinel2_512.npz", 88.6),  # measured 89.1
        ("fast", "38cloud_l8_patch192_384.npz", 88.0),  # measured 88.6
    ],
)
def test_shipped_scores_on_real_labelled_scenes(model: str, scene: str, min_f1: float) -> None:
    result = evaluate_npz(REAL / scene, model=model)
    assert result["F1"] >= min_f1, result


def test_shipped_default_does_not_depend_on_chunking() -> None:
    """The default's full-resolution edge head sits inside the engine's windows: a 512 px
    scene in 128 px chunks (merged to window-sized blocks with halos) gives the probabilities
    of one chunk, bit for bit."""
    import numpy as np

    from xsensei.demo import demo_scene

    scene = demo_scene(size=512)
    one = xsensei.cloudmask(scene, model="default", output="probability").values
    small = xsensei.cloudmask(scene.chunk({"y": 128, "x": 128}), model="default",
                              output="probability")
    assert len(small.data.chunks[-1]) > 1
    np.testing.assert_array_equal(small.values, one)
