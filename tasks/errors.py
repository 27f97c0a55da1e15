"""The harness's config error, beneath everything that raises or catches it (schema, validate, run)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config value that is not allowed; the message is one line naming the key, the value and what is allowed."""
