"""Shipped weights (safetensors) and the checkpoint format that reads and writes them."""

from xsensei.weights.checkpoint import (
    load_checkpoint,
    load_model,
    packaged_models,
    read_metadata,
    save_model,
)

__all__ = ["load_checkpoint", "load_model", "packaged_models", "read_metadata", "save_model"]
