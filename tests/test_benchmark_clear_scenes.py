"""benchmarks/clear_scenes: its scene-bootstrap intervals and paired model differences, and
one small real run through cloudmask()."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from benchmarks import clear_scenes as cs


def _counts(called: list[int], scored: int = 100) -> np.ndarray:
    return np.array([[c, scored] for c in called], dtype=np.int64)


def _draws(n: int, boot: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(boot, n))


def test_pooled_percent_weights_scenes_by_scored_pixels() -> None:
    counts = np.array([[10, 100], [0, 300]])
    assert cs.pooled_percent(counts) == 2.5  # 10 of 400, not the mean of 10 % and 0 %


def test_share_interval_is_wide_when_one_scene_carries_the_false_alarms() -> None:
    one_bad = _counts([85] + [0] * 15)  # the polar pattern: one snow scene called cloud
    even = _counts([5] * 15 + [10])
    assert cs.pooled_percent(one_bad) == cs.pooled_percent(even) == 85 / 16
    lo, hi = cs.share_interval(one_bad, _draws(16))
    assert lo == 0.0 and hi > 10.0  # the share alone says little
    lo_even, hi_even = cs.share_interval(even, _draws(16))
    assert lo_even < 85 / 16 < hi_even and hi_even - lo_even < 1.0


def test_paired_difference_sees_a_shift_the_unpaired_intervals_hide() -> None:
    base = _counts([85, 40, 0, 0, 3, 60, 0, 1])
    cand = _counts([87, 42, 2, 2, 5, 62, 2, 3])  # +2 points on every scene
    draws = _draws(8)
    d = cs.paired_difference(cand, base, draws)
    assert d["points"] == 2.0 and d["ci90"] == [2.0, 2.0]
    lo_b, hi_b = cs.share_interval(base, draws)
    assert lo_b < cs.pooled_percent(cand) < hi_b  # unpaired, the two models overlap
    same = cs.paired_difference(base, base, draws)
    assert same == {"points": 0.0, "ci90": [0.0, 0.0]}


def test_add_uncertainty_pairs_only_models_that_drew_the_same_scenes() -> None:
    def result(ref: str, generator: dict, called: list[int]) -> dict:
        return {"ref": ref, "generator": generator,
                "rows": [{"layout": "polar", "sensor": "landsat-8",
                          "counts": _counts(called).tolist()}]}

    results = [result("a", {"physics": "1.1", "layout_weights": [["polar", 0.12]]},
                      [50, 0, 0, 10]),
               # drew polar scenes more often in training: the same cloud-free scenes here
               result("b", {"physics": "1.1", "layout_weights": [["polar", 0.4]]},
                      [20, 0, 0, 0]),
               result("c", {"physics": "1.0", "layout_weights": [["polar", 0.12]]},
                      [20, 0, 0, 0])]
    for res in results:
        cs.add_uncertainty(res, results[0], boot=500, seed=1)
    a, b, c = (r["rows"][0] for r in results)
    assert "vs_first" not in a and "vs_first" not in c  # other scenes: no paired difference
    assert b["vs_first"]["ref"] == "a" and b["vs_first"]["points"] == -10.0
    lo, hi = b["vs_first"]["ci90"]
    assert lo <= -10.0 <= hi <= 0.0  # b never calls more cloud than a on any scene
    assert all(len(r["cloud_percent_ci90"]) == 2 for r in (a, b, c))


def test_small_run_records_intervals_and_paired_differences(tmp_path: Path) -> None:
    out = tmp_path / "clear.json"
    rc = cs.main(["--model", "fast", "--model", "sensei-pixelnet", "--per-layout", "2",
                  "--size", "64", "--sensors", "landsat-8", "--boot", "100", "--threads", "1",
                  "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    first, second = data["results"]
    layouts = [row["layout"] for row in first["rows"]]
    assert "polar" in layouts and "desert" in layouts
    for row in first["rows"]:
        lo, hi = row["cloud_percent_ci90"]
        assert 0.0 <= lo <= row["cloud_percent"] <= hi <= 100.0
        assert len(row["counts"]) == 2 and "vs_first" not in row
    for row in second["rows"]:  # the same model by another name: the same scenes and masks
        assert row["vs_first"] == {"ref": "fast", "points": 0.0, "ci90": [0.0, 0.0]}


def test_missing_generator_record_is_said_not_silently_replaced(capsys) -> None:
    from benchmarks import _common as C
    from xsensei.weights.checkpoint import read_metadata, resolve_model_path

    packaged = read_metadata(resolve_model_path("sensei-deeplab"))
    config, source = C.recorded_generator(packaged, "sensei-deeplab")
    assert source == "provenance" and config.physics == "1.1"
    assert capsys.readouterr().out == ""
    config, source = C.recorded_generator({"provenance": {"seed": 0}}, "soup")
    assert source == "defaults"
    out = capsys.readouterr().out
    assert "WARNING: soup records no generator settings" in out and config.physics in out
    assert not cs.same_scenes(dataclasses.asdict(config),
                              _generator_of(packaged))  # other scenes: never paired


def _generator_of(meta: dict) -> dict:
    from xsensei.training.synthetic import SyntheticConfig

    return dataclasses.asdict(SyntheticConfig.from_record(meta["provenance"]["generator"]))


def test_cloud_only_physics_versions_render_the_same_cloud_free_scenes() -> None:
    """Why models trained on physics 1.1, 1.2 or 1.3 are paired: their cloud-free scenes are
    bit for bit alike (1.2 / 1.3 change only how clouds are drawn); 1.0's are not."""
    from xsensei.training.synthetic import SyntheticConfig, sensor_bandset
    from xsensei.training.train import render_valset

    bandset = sensor_bandset("landsat-8")

    def rendered(physics: str, relief_prob: float = 1.0) -> np.ndarray:
        config = SyntheticConfig(physics=physics, relief_prob=relief_prob)
        images = []
        for layout in ("polar", "mountain", "agriculture"):
            gen = cs.clear_generator(config, layout, 48, 7)
            scenes = [gen.scene(i) for i in range(2)]
            images.append(render_valset(gen, scenes, bandset, group=layout,
                                        sensor="l8").values.numpy())
        return np.stack(images)

    base = rendered("1.1")
    for physics, relief in (("1.2", 1.0), ("1.2", 0.5), ("1.3", 1.0)):
        assert np.array_equal(rendered(physics, relief), base), physics
        assert cs.same_scenes(dataclasses.asdict(SyntheticConfig(physics=physics,
                                                                 relief_prob=relief)),
                              dataclasses.asdict(SyntheticConfig(physics="1.1")))
    assert not np.array_equal(rendered("1.0"), base)
    assert not cs.same_scenes(dataclasses.asdict(SyntheticConfig(physics="1.0")),
                              dataclasses.asdict(SyntheticConfig(physics="1.1")))
