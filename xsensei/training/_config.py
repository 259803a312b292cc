"""JSON round trip shared by the training configs (recipes in ``training/*.json``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self


def tuplify(value: Any) -> Any:
    """JSON lists -> tuples, recursively (config tuples must compare equal after a round trip)."""
    if isinstance(value, list | tuple):
        return tuple(tuplify(v) for v in value)
    return value


class JsonConfig:
    """``to_json`` / ``from_json`` over a config's own ``to_dict`` / ``from_dict``."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        raise NotImplementedError

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as indented JSON; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike[str]) -> Self:
        """Read a config from a ``.json`` file or from JSON text."""
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            text = Path(path_or_text).read_text()
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"a {cls.__name__} must be a JSON object")
        return cls.from_dict(data)
