"""PNG files with A1111 infotext, and the reader for it.

AUTOMATIC1111's web UI stores generation settings in a PNG ``tEXt`` chunk named
``parameters``: the prompt, a ``Negative prompt:`` line, then one line of ``Key: value``
pairs. A1111's PNG Info, ComfyUI importers, Civitai and most AI-art viewers read it, so every
image the bot writes carries it, and :func:`parse_infotext` reads it back.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin

INFOTEXT_KEY = "parameters"
NEGATIVE_PREFIX = "Negative prompt:"

# A1111's modules/infotext_utils.py reads the parameter line with this shape of pattern.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(value: object) -> str:
    """Quote a value as A1111 does: JSON string syntax when it holds ``,``, ``:`` or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text


@dataclass
class Infotext:
    """Prompt, negative prompt and the ordered ``Key: value`` parameters of one image."""

    prompt: str
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def to_text(self) -> str:
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"{NEGATIVE_PREFIX} {self.negative_prompt}")
        lines.append(", ".join(f"{k}: {quote(v)}" for k, v in self.params.items()))
        return "\n".join(lines)


def parse_infotext(text: str) -> Infotext:
    """Parse A1111 infotext (the inverse of :meth:`Infotext.to_text`)."""
    *lines, last = text.strip().split("\n")
    params: dict[str, str] = {}
    if len(_PARAM.findall(last)) >= 3:
        params = {k: unquote(v) for k, v in _PARAM.findall(last)}
    else:
        lines.append(last)
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX) :].strip()  # noqa: PLW2901 - the rest is the negative
        (negative_lines if in_negative else prompt_lines).append(line)
    return Infotext("\n".join(prompt_lines), "\n".join(negative_lines), params)


def encode_png(image: Image.Image, infotext: Infotext, *, compress_level: int = 6) -> bytes:
    """The image as PNG bytes with its infotext in the ``parameters`` chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(INFOTEXT_KEY, infotext.to_text())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def read_infotext(source: bytes | str | Path) -> Infotext | None:
    """The infotext of a PNG given as bytes or a path, or ``None`` when it has none."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        text = image.info.get(INFOTEXT_KEY)
    return parse_infotext(text) if isinstance(text, str) else None


def stored_rgb(png: bytes) -> Image.Image:
    """The pixels of a PNG the bot stored itself (an img2img input: already checked when it
    was attached). Raises :class:`ValueError` when it cannot be read (blocking: a thread)."""
    try:
        with Image.open(io.BytesIO(png)) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
