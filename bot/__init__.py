"""Animagine XL 3.1 for Discord: a core that knows nothing of Discord, and thin adapters."""

__version__ = "0.1.0"
