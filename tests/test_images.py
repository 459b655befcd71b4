"""PNG infotext in A1111's format, written and read back."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bot.images import Infotext, encode_png, parse_infotext, read_infotext

A1111_SAMPLE = (
    "1girl, (souryuu asuka langley:1.2), neon genesis evangelion\n"
    "second line of prompt\n"
    "Negative prompt: nsfw, lowres, (bad), [abstract]\n"
    "Steps: 28, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 832x1216, "
    "Model: animagine-xl-3.1, "
    'Hires upscale: 1.5, Lora hashes: "a: 1, b: 2"'
)


def test_a1111_infotext_parses() -> None:
    info = parse_infotext(A1111_SAMPLE)
    assert info.prompt == (
        "1girl, (souryuu asuka langley:1.2), neon genesis evangelion\nsecond line of prompt"
    )
    assert info.negative_prompt == "nsfw, lowres, (bad), [abstract]"
    assert info.params["Steps"] == "28"
    assert info.params["Sampler"] == "Euler a"
    assert info.params["Size"] == "832x1216"
    assert info.params["Lora hashes"] == "a: 1, b: 2"


def test_round_trip_quotes_values_with_commas_and_colons() -> None:
    info = Infotext(
        "1girl, solo",
        "lowres",
        {
            "Steps": "28",
            "Sampler": "DPM++ 2M Karras",
            "Quality preset": "Standard v3.1",
            "Note": 'has, comma: and "quotes"',
        },
    )
    text = info.to_text()
    assert text.splitlines()[1] == "Negative prompt: lowres"
    assert parse_infotext(text) == info


def test_png_carries_parameters_chunk(tmp_path: Path) -> None:
    info = Infotext("1girl", "", {"Steps": "3", "Sampler": "Euler a", "Seed": "1"})
    data = encode_png(Image.new("RGB", (8, 8), "white"), info)
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with Image.open(path) as image:
        assert image.info["parameters"] == "1girl\nSteps: 3, Sampler: Euler a, Seed: 1"
    assert read_infotext(path) == info
    assert read_infotext(data) == info


def test_png_without_infotext_reads_as_none() -> None:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    assert read_infotext(buffer.getvalue()) is None
