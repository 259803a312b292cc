"""Checkpoints: safetensors + JSON metadata, strict loading, clear errors, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import xsensei
from xsensei.errors import CheckpointError
from xsensei.nn.model import CLASSES_2, CloudMaskModel
from xsensei.weights.checkpoint import load_checkpoint, read_metadata, save_model


@pytest.fixture
def saved(tmp_path: Path) -> tuple[CloudMaskModel, Path]:
    torch.manual_seed(0)
    model = CloudMaskModel("pixelnet", classes=CLASSES_2)
    path = save_model(model, tmp_path / "m.safetensors", provenance={"data": "random"})
    return model, path


def test_round_trip_is_exact(saved) -> None:
    model, path = saved
    loaded = xsensei.load_model(path)
    assert loaded.classes == CLASSES_2
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2
        assert torch.equal(a, b)
    assert not loaded.training


def test_metadata_is_complete_json(saved) -> None:
    _, path = saved
    meta = read_metadata(path)
    assert meta["architecture"]["segmenter"]["name"] == "pixelnet"
    assert meta["architecture"]["sensei"]["out_channels"] == 64
    assert meta["trained"] is False
    assert meta["provenance"] == {"data": "random"}
    assert "log10" in meta["input"]["descriptor_encoding"]
    assert meta["xsensei_version"] == xsensei.__version__
    with safe_open(str(path), framework="pt") as f:
        json.loads(f.metadata()["xsensei"])  # the metadata is plain JSON in the header


def test_deeplab_round_trip(tmp_path: Path) -> None:
    model = CloudMaskModel("deeplabv3plus", segmenter_kwargs={"encoder_output_stride": 16})
    path = save_model(model, tmp_path / "d.safetensors")
    loaded = xsensei.load_model(str(path))
    assert loaded.segmenter.encoder.output_stride == 16


def test_refuses_to_overwrite(saved) -> None:
    model, path = saved
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(model, path)
    save_model(model, path, overwrite=True)


def test_truncated_file(saved, tmp_path: Path) -> None:
    _, path = saved
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted|damaged"):
        xsensei.load_model(bad)


def test_corrupted_tensor_bytes(saved, tmp_path: Path) -> None:
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the last tensor
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        xsensei.load_model(bad)


def test_mismatched_architecture(saved, tmp_path: Path) -> None:
    _, path = saved
    meta = read_metadata(path)
    meta["architecture"]["segmenter"]["kwargs"] = {"hidden": 8}
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    bad = tmp_path / "mismatch.safetensors"
    save_file(tensors, str(bad), metadata={"xsensei": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not match the stored architecture"):
        xsensei.load_model(bad)


def test_foreign_safetensors_and_garbage(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="without xsensei metadata"):
        xsensei.load_model(plain)
    pickle_like = tmp_path / "model.pt.safetensors"
    pickle_like.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle header is never unpickled
    with pytest.raises(CheckpointError):
        xsensei.load_model(pickle_like)


def test_unknown_name_lists_packaged_models() -> None:
    with pytest.raises(CheckpointError, match="not a packaged model"):
        xsensei.load_model("no-such-model")
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint("/nonexistent/x.safetensors")
