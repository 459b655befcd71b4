"""Attachment bounds: bytes, formats by content, header pixels before decoding, the fit."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from bot.attachments import (
    AttachmentRefused,
    card_size,
    header_size,
    prepare,
    read_capped,
    sniff,
)
from bot.config import load_settings
from bot.request import ASPECTS, find_aspect

ENGINE = load_settings(environ={}).engine


def encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's
    shape: a few bytes that would decode to gigabytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_oversized_bytes_are_refused_before_anything_else() -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * ENGINE.input_max_bytes
    with pytest.raises(AttachmentRefused, match=r"too large \(10\.0 MiB\): at most 10\.0 MiB"):
        prepare(data, ENGINE)


async def test_the_download_stops_once_past_the_cap_whatever_was_declared() -> None:
    sent: list[int] = []

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1000

    with pytest.raises(AttachmentRefused, match="download was stopped"):
        await read_capped(chunks(), 5000)
    assert len(sent) == 6  # not one chunk more than needed to know


@pytest.mark.parametrize(
    ("size", "message"),
    [((100_000, 100_000), "decompression bomb"), ((7000, 7000), "7000x7000 pixels")],
)
def test_huge_header_dimensions_are_refused_without_decoding(
    size: tuple[int, int], message: str
) -> None:
    bomb = png_header_only(*size)
    assert len(bomb) < 200
    with pytest.raises(AttachmentRefused, match=message):
        prepare(bomb, ENGINE)


def test_a_file_that_is_not_an_image_is_refused_whatever_its_name() -> None:
    with pytest.raises(AttachmentRefused, match="PNG, JPEG or WebP"):
        sniff(b"<html>not a png at all</html>")  # saved as "cat.png"
    gif = encoded(Image.new("RGB", (8, 8)), "GIF")
    with pytest.raises(AttachmentRefused, match="a GIF"):
        prepare(gif, ENGINE)
    with pytest.raises(AttachmentRefused, match="cannot be read"):
        prepare(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, ENGINE)


def test_truncated_image_is_refused_clearly() -> None:
    noise = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(noise), "PNG")
    with pytest.raises(AttachmentRefused, match="damaged or truncated"):
        prepare(data[: len(data) // 2], ENGINE)


def test_a_jpeg_is_fitted_to_the_nearest_card_resolution() -> None:
    photo = Image.new("RGB", (1000, 1500), (200, 40, 40))  # 2:3, nearest is 13:19
    prepared = prepare(encoded(photo, "JPEG", quality=90), ENGINE)
    assert prepared.format == "JPEG"
    assert prepared.original_size == (1000, 1500)
    assert prepared.aspect == find_aspect("832x1216")
    assert prepared.image.size == (832, 1216)
    assert prepared.image.mode == "RGB"
    assert prepared.png().startswith(b"\x89PNG")
    webp = prepare(encoded(Image.new("RGBA", (700, 300), (0, 0, 255, 0)), "WEBP"), ENGINE)
    assert webp.aspect == find_aspect("1536x640")
    assert webp.image.getpixel((10, 10)) == (255, 255, 255)  # transparency on white


def test_the_header_is_read_without_decoding_and_cards_fit_smaller_bounds() -> None:
    data = encoded(Image.new("RGB", (300, 200)), "PNG")
    assert header_size(data, "PNG", 10**6) == (300, 200)
    small = ENGINE.model_copy(update={"max_pixels": 9216, "min_side": 64})
    for aspect in ASPECTS:
        width, height = card_size(aspect, small)
        assert width * height <= 9216
        assert width % 8 == height % 8 == 0
    assert card_size(find_aspect("1024x1024"), small) == (96, 96)
