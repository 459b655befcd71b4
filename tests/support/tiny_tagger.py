"""A tiny WD14-layout tagger (``model.onnx`` + ``selected_tags.csv``) built in code.

It has the real taggers' interface: one input ``[N, size, size, 3]`` float32 (BGR, 0-255),
one output ``[N, tags]`` of sigmoid scores, and a tag list whose category-9 rows are the
ratings ``general, sensitive, questionable, explicit``. Its arithmetic is trivial:

* **red mode** (the default): the scores follow the image's *redness*, the mean of
  ``red - (green + blue) / 2`` over the (padded, resized) input, from -1 to 1. A plain red
  image (:func:`flagged_image`) is rated explicit (~0.998) and not general; a white or grey
  image is rated general (~0.95, explicit ~0.002), a light blue one (:func:`safe_image`)
  general ~0.999.
  ``explicit = sigmoid(12 * redness - 6)``, ``general = sigmoid(3 - 12 * redness)``,
  ``sensitive = questionable = sigmoid(-4)`` (~0.018). Explicit passes 0.3 at a redness of
  about 0.43. Note that non-square images are padded with white, which lowers the redness.
* **fixed mode** (``scores={"questionable": 0.7}``): every image gets these rating scores
  (ratings not named get 0.01), for tests whose images come from a real pipeline.

Besides the ratings, the tag list holds, as the real v3 taggers' ``selected_tags.csv`` does
(same names, category 0), the minor-related tags and sexual tags the image-side hard block
reads (:data:`MINOR_TAGS`, :data:`SEXUAL_TAGS`) and a few harmless neighbours
(:data:`NEIGHBOUR_TAGS`: ``petite``, ``flat_chest``, ...). Every such tag scores a fixed
0.01 unless ``tags`` names it (``tags={"loli": 0.9, "nude": 0.8}``); in red mode too.
``hard_block_tags=False`` leaves the minor tags out of the list (a tagger that cannot
judge minors, like an old or foreign tag list).

Use::

    folder = save_tiny_tagger(tmp_path / "tagger")             # red mode, 64x64 input
    folder = save_tiny_tagger(tmp_path / "t", scores={"explicit": 0.9})
    folder = save_tiny_tagger(tmp_path / "t", scores={"explicit": 0.9}, tags={"loli": 0.9})
    Tagger.load(str(folder)).rate(flagged_image())             # explicit ~0.998

``ratings_last=True`` puts the rating rows after the other tags (the parser must find them
by category, not by position).

For ``/describe``: ``extra_tags={"long_hair": (0, 0.8), "ganyu_(genshin_impact)": (4, 0.95)}``
adds tags (name as the CSV writes it, category, fixed score) after the others;
``red_tags=("nude",)`` makes listed tags (extra ones too) follow the redness as
``explicit`` does in red mode (a red image scores them ~0.998, a light blue one ~0), so one
tagger can see a harmless image and a sexual one.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

RATINGS: Final = ("general", "sensitive", "questionable", "explicit")
OTHER_TAGS: Final = (("1girl", 0), ("solo", 0), ("red theme", 0), ("hatsune miku", 4))
STEEPNESS: Final = 12.0
# Written out here, not imported from the bot: this list stands for the real taggers' one
# (each name is in SmilingWolf's v3 selected_tags.csv), which the bot must find its tags in.
MINOR_TAGS: Final = (
    "loli",
    "shota",
    "child",
    "aged_down",
    "oppai_loli",
    "onee-shota",
    "child_on_child",
    "baby",
    "kindergarten_uniform",
    "randoseru",
)
SEXUAL_TAGS: Final = (
    "nude",
    "completely_nude",
    "nipples",
    "pussy",
    "penis",
    "sex",
    "vaginal",
    "fellatio",
    "cum",
    "pantyshot",
)
NEIGHBOUR_TAGS: Final = ("petite", "flat_chest", "school_uniform", "topless", "swimsuit")
LOW: Final = 0.01


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def save_tiny_tagger(
    folder: Path,
    *,
    size: int = 64,
    scores: Mapping[str, float] | None = None,
    tags: Mapping[str, float] | None = None,
    hard_block_tags: bool = True,
    ratings_last: bool = False,
    input_name: str = "input_1",
    output_name: str = "predictions_sigmoid",
    extra_tags: Mapping[str, tuple[int, float]] | None = None,
    red_tags: Iterable[str] = (),
) -> Path:
    """Write ``model.onnx`` and ``selected_tags.csv`` into ``folder``; return ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    # Weights per tag over the BGR channel means scaled to 0-1, and a bias.
    redness = np.array([-0.5, -0.5, 1.0])
    rating_weights: dict[str, tuple[np.ndarray, float]]
    if scores is None:
        zero = np.zeros(3)
        rating_weights = {
            "general": (-STEEPNESS * redness, STEEPNESS * 0.25),
            "sensitive": (zero, -4.0),
            "questionable": (zero, -4.0),
            "explicit": (STEEPNESS * redness, -STEEPNESS * 0.5),
        }
    else:
        unknown = set(scores) - set(RATINGS)
        if unknown:
            raise ValueError(f"unknown ratings {sorted(unknown)}; use {RATINGS}")
        rating_weights = {name: (np.zeros(3), _logit(scores.get(name, 0.01))) for name in RATINGS}
    other_weights = {
        "1girl": (np.zeros(3), 2.0),
        "solo": (np.zeros(3), 1.0),
        "red theme": (STEEPNESS * redness, -STEEPNESS * 0.3),
        "hatsune miku": (np.zeros(3), -3.0),
    }
    listed = [*(MINOR_TAGS if hard_block_tags else ()), *SEXUAL_TAGS, *NEIGHBOUR_TAGS]
    fixed = dict(tags or {})
    unknown_tags = set(fixed) - set(listed)
    if unknown_tags:
        raise ValueError(f"tags {sorted(unknown_tags)} are not in this tagger's list")
    for name in listed:
        other_weights[name] = (np.zeros(3), _logit(fixed.get(name, LOW)))
    extras = dict(extra_tags or {})
    clashes = set(extras) & {*other_weights, *(n.replace(" ", "_") for n in other_weights)}
    if clashes:
        raise ValueError(f"extra tags {sorted(clashes)} are already in this tagger's list")
    for name, (_, score) in extras.items():
        other_weights[name] = (np.zeros(3), _logit(score))
    for name in red_tags:
        if name not in other_weights:
            raise ValueError(f"red tag {name!r} is not in this tagger's list")
        other_weights[name] = (STEEPNESS * redness, -STEEPNESS * 0.5)
    rows: list[tuple[str, int, tuple[np.ndarray, float]]] = [
        (name, 9, rating_weights[name]) for name in RATINGS
    ]
    others = [(name, category, other_weights[name]) for name, category in OTHER_TAGS]
    others += [(name, 0, other_weights[name]) for name in listed]
    others += [(name, category, other_weights[name]) for name, (category, _) in extras.items()]
    rows = [*others, *rows] if ratings_last else [*rows, *others]

    weights = np.stack([w for _, _, (w, _) in rows], axis=1).astype(np.float32)  # [3, T]
    bias = np.array([b for _, _, (_, b) in rows], dtype=np.float32)  # [T]
    tag_count = len(rows)

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [input_name], ["means"], axes=[1, 2], keepdims=0),
            helper.make_node("Mul", ["means", "scale"], ["scaled"]),
            helper.make_node("MatMul", ["scaled", "weights"], ["logits0"]),
            helper.make_node("Add", ["logits0", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], [output_name]),
        ],
        "tiny_wd14_tagger",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", tag_count])],
        initializer=[
            numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))

    with (folder / "selected_tags.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for number, (name, category, _) in enumerate(rows):
            writer.writerow([9_999_000 + number, name.replace(" ", "_"), category, 1000 - number])
    return folder


def flagged_image(width: int = 96, height: int = 96) -> Image.Image:
    """A plain red image: rated explicit by the red-mode tagger (keep it square)."""
    return Image.new("RGB", (width, height), (255, 0, 0))


def safe_image(width: int = 96, height: int = 96) -> Image.Image:
    """A plain light blue image: rated general by the red-mode tagger."""
    return Image.new("RGB", (width, height), (120, 160, 255))
