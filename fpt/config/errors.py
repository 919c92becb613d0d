"""The one exception of the config layer."""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message is one line."""
