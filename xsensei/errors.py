"""Named exception types that users can catch."""

from __future__ import annotations


class XSenseiError(Exception):
    """Base class of every error raised on purpose by xsensei."""


class DescriptorError(XSenseiError, ValueError):
    """A band's wavelengths are missing, malformed or cannot be encoded."""


class CheckpointError(XSenseiError, ValueError):
    """A weights file is missing, truncated, corrupted or does not match its metadata."""


class InputError(XSenseiError, ValueError):
    """Input imagery has the wrong shape, scale, dtype or dimensions."""
