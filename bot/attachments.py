"""Image prompts: an attached image made safe to use as img2img input (no Discord here).

Every bound holds *before* the image is decoded, cheapest first:

1. bytes: the download stops as soon as it passes ``engine.input_max_bytes``, whatever size
   was declared (:func:`download`); a body already in hand is measured again;
2. format, by content: PNG, JPEG or WebP signatures only (:func:`sniff`), never by the file
   name or the declared content type;
3. pixels, read from the header without decoding (:func:`header_size`): more than
   ``engine.input_max_pixels`` is refused, and so is a header that Pillow itself sees as a
   decompression bomb (:class:`PIL.Image.DecompressionBombError` or its warning);
4. decode, then fit to the nearest of the nine card resolutions (:func:`bot.request.
   nearest_aspect`: scaled to cover, the middle cropped) and store as a PNG.

Each refusal is an :class:`AttachmentRefused` whose message is meant for the member. Rating
by the tagger comes after this (:func:`bot.moderation.image_check.input_refusal`).
"""

from __future__ import annotations

import asyncio
import io
import math
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps

from bot.config import EngineSettings
from bot.errors import RequestError
from bot.request import Aspect, nearest_aspect

FORMATS: Final = ("PNG", "JPEG", "WEBP")
_CHUNK: Final = 64 * 1024


class AttachmentRefused(RequestError):
    """The attached image cannot be used; the message says why, for the member."""


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def sniff(data: bytes) -> str:
    """The image format from the first bytes (``PNG``, ``JPEG``, ``WEBP``), or refused."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] == b"GIF8":
        raise AttachmentRefused(
            "the attached file is a GIF: attach a PNG, JPEG or WebP image (recognised by its "
            "content, not its name)"
        )
    raise AttachmentRefused(
        "the attached file is not an image the bot reads: attach a PNG, JPEG or WebP image "
        "(recognised by its content, not its name)"
    )


def too_large(size: int, limit: int) -> AttachmentRefused:
    return AttachmentRefused(
        "the attached image is too large ({size}): at most {most}", size=mib(size), most=mib(limit)
    )


def check_bytes(size: int, limit: int) -> None:
    if size > limit:
        raise too_large(size, limit)


def _open(data: bytes, fmt: str) -> Image.Image:
    """Open lazily (the header only); Pillow's own bomb check is an error, not a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=[fmt])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise AttachmentRefused(
                "the attached image declares far more pixels than it could hold (a "
                "decompression bomb): it was not opened"
            ) from None
        except (OSError, ValueError, SyntaxError):
            raise AttachmentRefused(
                "the attached file starts like a {format} image but cannot be read: it is "
                "damaged or not really an image",
                format=fmt,
            ) from None


def header_size(data: bytes, fmt: str, max_pixels: int) -> tuple[int, int]:
    """Width and height as the header declares them, within ``max_pixels``; nothing decoded."""
    with _open(data, fmt) as image:
        width, height = image.size
    if width < 1 or height < 1:
        raise AttachmentRefused("the attached image has no pixels")
    if width * height > max_pixels:
        raise AttachmentRefused(
            "the attached image is {size} pixels: at most {most} megapixels",
            size=f"{width}x{height}",
            most=f"{max_pixels / 1e6:.1f}",
        )
    return width, height


def decode(data: bytes, fmt: str) -> Image.Image:
    """Decode (after :func:`header_size`): RGB, the EXIF orientation applied, transparency
    laid on white; the first frame of an animation."""
    with _open(data, fmt) as image:
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise AttachmentRefused(
                "the attached image is damaged or truncated: it could not be decoded"
            ) from None
        if upright.mode in ("RGBA", "LA", "P", "PA"):
            rgba = upright.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            return canvas.convert("RGB")
        return upright.convert("RGB")


def card_size(aspect: Aspect, bounds: EngineSettings) -> tuple[int, int]:
    """The card's size, or where ``engine.max_pixels`` / ``max_side`` allow less, the card
    scaled down with its ratio kept (each side a multiple of 8, at least ``min_side``)."""
    width, height = aspect.width, aspect.height
    scale = min(
        1.0,
        math.sqrt(bounds.max_pixels / (width * height)),
        bounds.max_side / max(width, height),
    )
    if scale >= 1.0:
        return width, height
    return (
        max(bounds.min_side, int(width * scale) // 8 * 8),
        max(bounds.min_side, int(height * scale) // 8 * 8),
    )


def fit_card(
    image: Image.Image, bounds: EngineSettings, aspect: Aspect | None = None
) -> tuple[Image.Image, Aspect]:
    """``image`` fitted to ``aspect`` (by default the nearest card resolution): scaled to
    cover it, the middle cropped (no stretching, no borders)."""
    aspect = aspect or nearest_aspect(*image.size)
    size = card_size(aspect, bounds)
    fitted = image if image.size == size else ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    return fitted, aspect


@dataclass(frozen=True)
class PreparedImage:
    """An attached image, checked and fitted: ready to rate and to store."""

    image: Image.Image  # RGB, exactly the card size (see :func:`card_size`)
    aspect: Aspect
    original_size: tuple[int, int]
    format: str

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def prepare(data: bytes, bounds: EngineSettings, aspect: Aspect | None = None) -> PreparedImage:
    """Every bound of the module, in order, then the decode and the fit to ``aspect`` (by
    default the nearest card); CPU work: call it off the event loop. Raises
    :class:`AttachmentRefused`."""
    check_bytes(len(data), bounds.input_max_bytes)
    fmt = sniff(data)
    size = header_size(data, fmt, bounds.input_max_pixels)
    image = decode(data, fmt)
    fitted, aspect = fit_card(image, bounds, aspect)
    return PreparedImage(fitted, aspect, size, fmt)


async def read_capped(chunks: object, limit: int) -> bytes:
    """Read an async iterator of byte chunks, refusing as soon as it passes ``limit``."""
    buffer = bytearray()
    async for chunk in chunks:  # type: ignore[attr-defined]
        buffer += chunk
        if len(buffer) > limit:
            raise AttachmentRefused(
                "the attached image is larger than {most}: the download was stopped",
                most=mib(limit),
            )
    return bytes(buffer)


async def download(url: str, *, declared: int | None, max_bytes: int, limit_s: float) -> bytes:
    """The attachment's bytes: refused at once when its declared size is over ``max_bytes``,
    and stopped as soon as the body passes it (the declared size is not trusted); the
    whole download within ``limit_s`` seconds."""
    import aiohttp

    if declared is not None:
        check_bytes(declared, max_bytes)
    try:
        async with asyncio.timeout(limit_s):
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                if response.status != 200:
                    raise AttachmentRefused(
                        "the attached image could not be downloaded (HTTP {status})",
                        status=response.status,
                    )
                length = response.content_length
                if length is not None:
                    check_bytes(length, max_bytes)
                return await read_capped(response.content.iter_chunked(_CHUNK), max_bytes)
    except TimeoutError:
        raise AttachmentRefused(
            "the attached image took longer than {seconds} s to download",
            seconds=f"{limit_s:g}",
        ) from None
    except aiohttp.ClientError as exc:
        raise AttachmentRefused(
            "the attached image could not be downloaded ({error})", error=type(exc).__name__
        ) from None
