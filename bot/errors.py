"""Errors the core raises for people to read, importable without torch (the CLI's fast path).

Words for people stay translatable: :class:`Text` keeps an English template and its values
(``str()`` is the English the CLI and the logs print); an adapter writes the same text in
its reader's language from the template (the Discord adapter's catalogues are keyed by
these templates). :class:`ReadableError` is an error whose message is such a text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Text:
    """An English template with ``{named}`` placeholders and their values (plain values,
    or texts themselves: ``{images}`` filled with "3 images")."""

    template: str
    values: Mapping[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.values:
            return self.template
        return self.template.format(**{k: str(v) for k, v in self.values.items()})

    def as_data(self) -> dict[str, Any]:
        """As JSON (kept with what it explains, e.g. an image's verdict)."""
        values = {
            k: v.as_data() if isinstance(v, Text) else v if isinstance(v, int | float) else str(v)
            for k, v in self.values.items()
        }
        return {"template": self.template, "values": values}

    @classmethod
    def from_data(cls, data: object, fallback: str = "") -> Text:
        """What :meth:`as_data` wrote; ``fallback`` (as a plain text) when it is not that."""
        if not isinstance(data, Mapping) or not isinstance(data.get("template"), str):
            return cls(fallback)
        raw = data.get("values")
        values: dict[str, object] = {}
        for key, value in raw.items() if isinstance(raw, Mapping) else ():
            values[str(key)] = cls.from_data(value) if isinstance(value, Mapping) else value
        return cls(data["template"], values)


def words(template: str, /, **values: object) -> Text:
    """A text for people: ``words("at most {most} steps", most=40)``."""
    return Text(template, values)


def counted(count: int, one: str, many: str, /, **values: object) -> Text:
    """``one`` (for a count of 1) or ``many`` (with ``{count}``): "1 image", "3 images"."""
    return Text(one if count == 1 else many, {"count": count, **values})


class ReadableError(Exception):
    """An error whose message is for people: ``str()`` is the English, :attr:`text` the
    template and values to write it in another language."""

    def __init__(self, message: str | Text = "", /, **values: Any) -> None:
        self.text = message if isinstance(message, Text) else Text(message, values)
        super().__init__(str(self.text))


class ModelLoadError(RuntimeError):
    """The model (or its VAE) could not be loaded; the message names the source."""


class DeviceError(RuntimeError):
    """The configured device or precision cannot be used on this machine."""


class EngineError(RuntimeError):
    """A job failed inside the engine; the message is fit to show the requester."""


class RequestError(ReadableError, ValueError):
    """A request that cannot be served as asked; the message says why, for the asker."""
