"""The one exception of configuration, and how a bad value is shown in it."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration mistake; the message names the key."""


def show(value: Any) -> str:
    """A value as an error message quotes it: repr, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
