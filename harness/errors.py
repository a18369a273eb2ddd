"""Errors the CLI turns into one-line messages with a non-zero exit."""


class ConfigError(Exception):
    """Bad configuration or input: the message names the thing and the problem."""


class EngineUnavailable(ConfigError):
    """An engine is registered but its package is not installed."""
