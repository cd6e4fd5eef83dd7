"""The user-facing error of a bad setting, in the package's lowest layer (no pydantic, no YAML),
so that the attention core's registries can raise it without importing the config machinery."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config could not be read or validated; the message is one user-facing line."""

    def __init__(self, message: str = ""):
        super().__init__(" ".join(str(message).splitlines()))  # a key or value may hold a newline
