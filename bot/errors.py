"""Errors the core raises for people to read, importable without torch (the CLI's fast path)."""


class ModelLoadError(RuntimeError):
    """The model (or its VAE) could not be loaded; the message names the source."""


class DeviceError(RuntimeError):
    """The configured device or precision cannot be used on this machine."""


class EngineError(RuntimeError):
    """A job failed inside the engine; the message is fit to show the requester."""


class RequestError(ValueError):
    """A request that cannot be served as asked; the message says why, for the asker."""
