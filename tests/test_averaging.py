"""Uniform checkpoint averages ("model soup"): the numbers, the provenance, and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import xsensei
from xsensei.cli import main
from xsensei.errors import CheckpointError
from xsensei.nn.model import CLASSES_2, CloudMaskModel
from xsensei.training.averaging import average_checkpoints
from xsensei.weights.checkpoint import load_checkpoint, packaged_models, read_metadata, save_model


def _saved(tmp_path: Path, seed: int, *, trained: bool = True, classes=None,
           inference=None, provenance=None) -> Path:
    torch.manual_seed(seed)
    model = CloudMaskModel("pixelnet", **({"classes": classes} if classes else {}))
    with torch.no_grad():  # distinct batch-norm statistics and counters per input
        for buf in model.buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)
            else:
                buf.fill_(seed + 1)
    return save_model(model, tmp_path / f"seed{seed}.safetensors", trained=trained,
                      provenance=provenance or {"seed": seed, "data": "synthetic"},
                      inference=inference or {"window": 256})


def test_average_is_the_elementwise_mean(tmp_path: Path) -> None:
    paths = [_saved(tmp_path, s) for s in (0, 1, 2)]
    out = average_checkpoints(paths, tmp_path / "soup.safetensors", name="soup", version="1")
    states = [load_checkpoint(p)[0].state_dict() for p in paths]
    soup, meta = load_checkpoint(out)
    floats = 0
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            expected = sum(s[key].double() for s in states) / 3
            torch.testing.assert_close(value, expected.float(), rtol=0, atol=1e-7)
            floats += 1
        else:  # batch-norm counters: the first input's
            assert torch.equal(value, states[0][key])
            assert int(value) == 1
    assert floats > 50
    assert not torch.equal(soup.state_dict()["segmenter.net.0.running_var"],
                           states[0]["segmenter.net.0.running_var"])
    assert meta["name"] == "soup" and meta["version"] == "1" and meta["trained"] is True
    assert meta["inference"] == {"window": 256}
    inputs = meta["provenance"]["weight_average"]["inputs"]
    assert [i["provenance"]["seed"] for i in inputs] == [0, 1, 2]
    # what the inputs agree on stays at the top level, what differs only per input
    assert meta["provenance"]["data"] == "synthetic" and "seed" not in meta["provenance"]
    assert [i["sha256"] for i in inputs] == [read_metadata(p)["sha256"] for p in paths]


def test_average_of_seeds_keeps_their_shared_generator_settings(tmp_path: Path) -> None:
    """Seeds of one recipe record generators that differ in their seed alone; the average must
    keep the settings (the benchmarks redraw scenes from them), not drop the whole record."""
    from xsensei.training.synthetic import SyntheticConfig

    def generator(seed: int, polar: float) -> dict:
        return {"module": "xsensei.training.synthetic", "version": "1.1", "seed": seed,
                "config": {"physics": "1.1", "tau_thin": 1.5,
                           "layout_weights": [["natural", 1 - polar], ["polar", polar]]}}

    paths = [_saved(tmp_path, s, provenance={"seed": s, "generator": generator(s, p)})
             for s, p in ((0, 0.4), (1, 0.4), (2, 0.25))]
    meta = read_metadata(average_checkpoints(paths[:2], tmp_path / "two.safetensors"))
    assert meta["provenance"]["generator"] == {
        k: v for k, v in generator(0, 0.4).items() if k != "seed"}
    drawn = SyntheticConfig.from_record(meta["provenance"]["generator"])
    assert drawn.physics == "1.1" and drawn.tau_thin == 1.5  # not the 1.0 defaults
    # a setting the inputs disagree on is dropped, the rest of the record stays
    mixed = read_metadata(average_checkpoints(paths, tmp_path / "three.safetensors"))
    assert mixed["provenance"]["generator"]["config"] == {"physics": "1.1", "tau_thin": 1.5}
    assert [i["provenance"]["generator"]["seed"]
            for i in mixed["provenance"]["weight_average"]["inputs"]] == [0, 1, 2]


def test_average_of_copies_is_the_copy_bit_for_bit(tmp_path: Path) -> None:
    one = _saved(tmp_path, 3)
    two = tmp_path / "copy.safetensors"
    two.write_bytes(one.read_bytes())
    out = average_checkpoints([one, two], tmp_path / "soup.safetensors")
    assert read_metadata(out)["sha256"] == read_metadata(one)["sha256"]
    # and it runs as a model: cloudmask through the averaged file
    image = np.random.default_rng(0).uniform(0, 0.4, (4, 32, 32)).astype("float32")
    desc = [[450, 490, 520], [540, 560, 580], [650, 665, 680], [780, 842, 900]]
    got = xsensei.cloudmask(image, desc, model=str(out), output="probability")
    want = xsensei.cloudmask(image, desc, model=str(one), output="probability")
    np.testing.assert_array_equal(got, want)


def test_untrained_input_makes_an_untrained_average(tmp_path: Path) -> None:
    out = average_checkpoints([_saved(tmp_path, 0), _saved(tmp_path, 1, trained=False)],
                              tmp_path / "soup.safetensors")
    assert read_metadata(out)["trained"] is False


def test_refusals(tmp_path: Path) -> None:
    a = _saved(tmp_path, 0)
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([a], tmp_path / "x.safetensors")
    other = tmp_path / "other"
    other.mkdir()
    b = _saved(other, 1, classes=CLASSES_2)
    with pytest.raises(CheckpointError, match="another architecture"):
        average_checkpoints([a, b], tmp_path / "x.safetensors")
    c = _saved(other, 2, inference={"window": 512})
    with pytest.raises(CheckpointError, match="other inference settings"):
        average_checkpoints([a, c], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    d = _saved(other, 3)
    with pytest.raises(FileExistsError):
        average_checkpoints([a, d], a)  # never silently replaces a file
    assert read_metadata(a)["provenance"]["seed"] == 0


def test_cli(tmp_path: Path, capsys) -> None:
    a, b = _saved(tmp_path, 0), _saved(tmp_path, 1)
    out = tmp_path / "soup.safetensors"
    assert main(["average", str(a), str(b), "--out", str(out), "--name", "mine"]) == 0
    assert read_metadata(out)["name"] == "mine"
    assert "mean of 2 checkpoints" in capsys.readouterr().out
    assert main(["average", str(a), str(b), "--out", str(out)]) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err  # the flag, not a kwarg
    assert main(["average", str(a), str(b), "--out", str(out), "--overwrite"]) == 0


def test_packaged_names_are_accepted(tmp_path: Path) -> None:
    out = average_checkpoints(["fast", "sensei-pixelnet"], tmp_path / "same.safetensors")
    meta = read_metadata(out)
    assert meta["sha256"] == read_metadata(packaged_models()["sensei-pixelnet"])["sha256"]
    assert meta["inference"]["thermal_bands"] == "ignore"
    with pytest.raises(CheckpointError, match="unknown model"):
        average_checkpoints(["fast", "no-such-model"], tmp_path / "x.safetensors")
