"""The image classifier: a WD14-style anime tagger (ONNX) read for its rating scores and for
the tags of the image-side hard block.

SmilingWolf's taggers (``wd-vit-tagger-v3`` and its siblings) ship ``model.onnx`` and
``selected_tags.csv`` (``tag_id,name,category,count``); the rows with category 9 are the
ratings ``general``, ``sensitive``, ``questionable`` and ``explicit``, and the model's
output holds one sigmoid score per row. :meth:`Tagger.load` takes a local folder holding
both files (or the path of the ``.onnx`` file beside the CSV) or a Hugging Face repo id.

Preprocessing (:func:`prepare`) is what the taggers were trained with: transparency
composited on white, padded to a centred white square, resized with bicubic filtering to
the input size read from the ONNX graph, float32 values 0-255 in BGR order, shape
``[1, H, W, 3]``.

:meth:`Tagger.rate` is synchronous and thread-safe: run it in a worker thread, never on the
event loop. The session uses a few CPU threads (``moderation.classifier.threads``) so that
it does not starve the engine. Every failure, at load or at run time, raises
:class:`ClassifierUnavailable`, whose message names the classifier's source; the caller
then decides with ``scores=None`` (see :func:`bot.moderation.image_check.image_verdict`).

**The image-side hard block.** Besides the ratings, the tagger scores thousands of Danbooru
tags. :meth:`Tagger.rate` reads two groups of them (names as in ``selected_tags.csv``,
category 0): :data:`MINOR_TAGS`, tags that show a minor, and :data:`SEXUAL_TAGS`, tags of
nudity, genitals and sex acts. An image whose minor tag passes
``hard_block.minor_threshold`` and that has a sexual signal (a sexual tag over
``hard_block.sexual_tag_threshold``, or a questionable/explicit score over the hard block's
own, lower, rating thresholds) is a hard block in every channel. The tag choice:

* minors: ``loli``, ``shota``, ``child`` (required: without them the tagger cannot judge
  minors at all), and where the tag list has them ``female_child``, ``male_child``,
  ``toddler``, ``baby``, ``aged_down`` (a character drawn younger than canon, on Danbooru
  as a child), ``oppai_loli``, ``onee-shota``, ``child_on_child``, ``kindergarten_uniform``
  and ``randoseru`` (the elementary-school satchel: in a sexual image, the loli trope);
* left out on purpose, because they describe adults as often as children: ``petite``,
  ``flat_chest``, ``small_breasts``, ``school_uniform``, ``serafuku``, ``age_difference``,
  ``mother_and_daughter``, ``chibi``;
* sexual: nudity and genitals (``nude``, ``completely_nude``, ``nipples``, ``pussy``,
  ``penis``, ...), sex acts and fluids (``sex``, ``fellatio``, ``cum``, ...) and the
  sexualising shots ``pantyshot``, ``upskirt`` and ``cameltoe``; not ``topless``,
  ``swimsuit`` or ``underwear``, which a harmless beach or bath picture shows too.

:attr:`Tagger.missing_tags` lists the required minor tags the tag list lacks; then every
image's :attr:`~bot.moderation.image_check.RatingScores.minors_checked` is False and sexual
images are withheld everywhere (fail closed), and :attr:`Tagger.problem` says why.

**Every tag** (:meth:`Tagger.tag_scores`, for ``/describe``): the general (category 0),
copyright (3) and character (4) tags over the given thresholds, highest first, with the
same rating scores :meth:`Tagger.rate` gives, from one run of the model.
"""

from __future__ import annotations

import csv
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from bot.moderation.image_check import RatingScores
from bot.moderation.settings import ClassifierSettings, ImageHardBlockSettings

__all__ = [
    "MINOR_TAGS",
    "MODEL_FILE",
    "RATING_CATEGORY",
    "RATING_NAMES",
    "REQUIRED_MINOR_TAGS",
    "SEXUAL_TAGS",
    "TAGS_FILE",
    "ClassifierUnavailable",
    "TagScores",
    "Tagger",
    "prepare",
    "read_rating_rows",
    "read_tag_categories",
    "read_tag_names",
]

MODEL_FILE: Final = "model.onnx"
TAGS_FILE: Final = "selected_tags.csv"
RATING_CATEGORY: Final = 9
RATING_NAMES: Final = ("general", "sensitive", "questionable", "explicit")
GENERAL_CATEGORY: Final = 0
COPYRIGHT_CATEGORY: Final = 3
CHARACTER_CATEGORY: Final = 4

REQUIRED_MINOR_TAGS: Final = ("loli", "shota", "child")
"""Without these three the tagger cannot judge minors: the hard block fails closed."""
MINOR_TAGS: Final = (
    *REQUIRED_MINOR_TAGS,
    "female_child",
    "male_child",
    "toddler",
    "baby",
    "aged_down",
    "oppai_loli",
    "onee-shota",
    "child_on_child",
    "kindergarten_uniform",
    "randoseru",
)
"""Tags that show a minor (those the tag list lacks, beyond the required ones, are skipped)."""
SEXUAL_TAGS: Final = (
    "nude",
    "completely_nude",
    "nipples",
    "areola_slip",
    "breasts_out",
    "pussy",
    "penis",
    "testicles",
    "anus",
    "clitoris",
    "erection",
    "bottomless",
    "spread_pussy",
    "cameltoe",
    "pantyshot",
    "upskirt",
    "sex",
    "vaginal",
    "anal",
    "oral",
    "fellatio",
    "cunnilingus",
    "paizuri",
    "handjob",
    "footjob",
    "fingering",
    "masturbation",
    "group_sex",
    "rape",
    "sex_toy",
    "object_insertion",
    "cum",
    "pussy_juice",
    "ejaculation",
    "after_sex",
    "ahegao",
)
"""Tags of nudity, genitals and sex acts: each is a sexual signal for the hard block."""

_REPO_ID: Final = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class ClassifierUnavailable(Exception):
    """The classifier cannot be loaded or cannot rate an image; names its source."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"image classifier {source!r}: {problem}")
        self.source = source
        self.problem = problem


def prepare(image: Image.Image, size: int) -> npt.NDArray[np.float32]:
    """The tagger's input for ``image``: ``[1, size, size, 3]`` float32, BGR, 0-255.

    Transparent parts are composited on white; the image is centred on a white square
    (extra pixels of an odd difference go right and bottom) and resized with bicubic
    filtering when its side is not ``size``.
    """
    if size < 1:
        raise ValueError(f"size must be positive (got {size})")
    rgba = image.convert("RGBA")
    flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)
    rgb = flat.convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    array = np.asarray(square, dtype=np.float32)[:, :, ::-1]
    return np.ascontiguousarray(array[np.newaxis])


def read_rating_rows(path: Path, source: str) -> tuple[int, tuple[int, int, int, int]]:
    """The number of tags in ``selected_tags.csv`` and the rows of the four ratings."""
    rows = _read_rows(path, source)
    ratings: dict[str, int] = {}
    for number, row in enumerate(rows):
        if _category(row, number, path, source) == RATING_CATEGORY:
            ratings[(row["name"] or "").strip().casefold()] = number
    if sorted(ratings) != sorted(RATING_NAMES):
        found = ", ".join(sorted(ratings)) or "none"
        raise ClassifierUnavailable(
            source,
            f"{path} has the rating tags {found} (category {RATING_CATEGORY}); "
            f"expected {', '.join(RATING_NAMES)}",
        )
    general, sensitive, questionable, explicit = (ratings[name] for name in RATING_NAMES)
    return len(rows), (general, sensitive, questionable, explicit)


def tag_name(name: str) -> str:
    """A tag as the tag lists write it: ``Aged down`` is ``aged_down``."""
    return name.strip().replace(" ", "_").casefold()


def read_tag_names(path: Path, source: str) -> dict[str, int]:
    """Every tag of ``selected_tags.csv`` that is not a rating: name -> row."""
    names: dict[str, int] = {}
    for number, row in enumerate(_read_rows(path, source)):
        if _category(row, number, path, source) != RATING_CATEGORY:
            names.setdefault(tag_name(row["name"] or ""), number)
    return names


def read_tag_categories(path: Path, source: str) -> tuple[tuple[str, int], ...]:
    """Every row of ``selected_tags.csv``: its name (as the list writes it) and category."""
    return tuple(
        ((row["name"] or "").strip(), _category(row, number, path, source))
        for number, row in enumerate(_read_rows(path, source))
    )


def _category(row: dict[str, str], number: int, path: Path, source: str) -> int:
    try:
        return int(row["category"] or "")
    except ValueError:
        raise ClassifierUnavailable(
            source, f"{path}, row {number + 2}: category {row['category']!r} is not a number"
        ) from None


def _read_rows(path: Path, source: str) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClassifierUnavailable(source, f"cannot read {path}: {exc}") from None
    if not rows or "name" not in rows[0] or "category" not in rows[0]:
        raise ClassifierUnavailable(
            source, f"{path} is not a tag list: expected the columns name and category"
        )
    return rows


def _hub_download(
    repo_id: str, filename: str, *, revision: str | None, cache_dir: str | None, offline: bool
) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
        )
    )


def _locate(
    source: str, *, revision: str | None, cache_dir: str | None, offline: bool
) -> tuple[Path, Path]:
    if not source.strip():
        raise ClassifierUnavailable(source, "no classifier is configured")
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".onnx":
        return path, path.with_name(TAGS_FILE)
    if path.is_dir():
        return path / MODEL_FILE, path / TAGS_FILE
    if path.exists():
        raise ClassifierUnavailable(
            source, f"expected a folder with {MODEL_FILE} and {TAGS_FILE}, or an .onnx file"
        )
    if not _REPO_ID.fullmatch(source):
        raise ClassifierUnavailable(source, "no such folder or file")
    files: list[Path] = []
    for name in (MODEL_FILE, TAGS_FILE):
        try:
            files.append(
                _hub_download(source, name, revision=revision, cache_dir=cache_dir, offline=offline)
            )
        except Exception as exc:
            where = "in the local cache (offline)" if offline else "from the Hugging Face hub"
            raise ClassifierUnavailable(
                source, f"cannot get {name} {where}: {type(exc).__name__}: {exc}"
            ) from None
    return files[0], files[1]


def _providers(ort: Any, device: str, source: str) -> list[str]:
    available = set(ort.get_available_providers())
    cuda = "CUDAExecutionProvider"
    if device == "cuda" and cuda not in available:
        raise ClassifierUnavailable(
            source, "device 'cuda' needs onnxruntime-gpu with CUDAExecutionProvider"
        )
    if device in ("cuda", "auto") and cuda in available:
        return [cuda, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass(frozen=True, slots=True)
class _Graph:
    input_name: str
    output_name: str
    size: int


def _read_graph(session: Any, tag_count: int, source: str) -> _Graph:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise ClassifierUnavailable(source, "expected a model with one input and an output")
    shape = list(inputs[0].shape)
    square = (
        len(shape) == 4
        and shape[3] == 3
        and isinstance(shape[1], int)
        and shape[1] == shape[2]
        and shape[1] > 0
    )
    if not square:
        raise ClassifierUnavailable(
            source, f"expected an input of shape [N, size, size, 3] with a fixed size; got {shape}"
        )
    if inputs[0].type != "tensor(float)":
        raise ClassifierUnavailable(source, f"expected a float32 input; got {inputs[0].type}")
    width = list(outputs[0].shape)[-1:]
    if width and isinstance(width[0], int) and width[0] != tag_count:
        raise ClassifierUnavailable(
            source, f"the model scores {width[0]} tags but {TAGS_FILE} lists {tag_count}"
        )
    return _Graph(inputs[0].name, outputs[0].name, int(shape[1]))


@dataclass(frozen=True, slots=True)
class _Watch:
    """The tags the hard block reads: name -> row, and the thresholds."""

    minors: dict[str, int]
    sexual: dict[str, int]
    missing: tuple[str, ...]  # required minor tags the tag list lacks
    settings: ImageHardBlockSettings

    @classmethod
    def of(cls, names: dict[str, int], settings: ImageHardBlockSettings) -> _Watch:
        minor_tags = dict.fromkeys([*MINOR_TAGS, *settings.extra_minor_tags])
        sexual_tags = dict.fromkeys([*SEXUAL_TAGS, *settings.extra_sexual_tags])
        return cls(
            minors={tag: names[tag] for tag in minor_tags if tag in names},
            sexual={tag: names[tag] for tag in sexual_tags if tag in names},
            missing=tuple(tag for tag in REQUIRED_MINOR_TAGS if tag not in names),
            settings=settings,
        )


@dataclass(frozen=True, slots=True)
class TagScores:
    """What :meth:`Tagger.tag_scores` saw: tags over the thresholds, highest score first,
    named as ``selected_tags.csv`` names them (``long_hair``), and the rating scores."""

    ratings: RatingScores
    general: tuple[tuple[str, float], ...] = ()
    character: tuple[tuple[str, float], ...] = ()
    copyright: tuple[tuple[str, float], ...] = ()


class Tagger:
    """A loaded tagger; :meth:`rate` gives an image's rating scores and hard-block signals,
    :meth:`tag_scores` its tags as well."""

    def __init__(
        self,
        session: Any,
        *,
        source: str,
        graph: _Graph,
        tag_count: int,
        ratings: tuple[int, int, int, int],
        watch: _Watch,
        categories: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self._session = session
        self._categories = categories
        self._graph = graph
        self._tag_count = tag_count
        self._ratings = ratings
        self._watch = watch
        self.source = source

    @property
    def missing_tags(self) -> tuple[str, ...]:
        """Required minor tags (:data:`REQUIRED_MINOR_TAGS`) the tag list lacks."""
        return self._watch.missing

    @property
    def minor_tags(self) -> tuple[str, ...]:
        """The minor-related tags this tagger scores (the hard block reads these)."""
        return tuple(self._watch.minors)

    @property
    def sexual_tags(self) -> tuple[str, ...]:
        """The sexual tags this tagger scores."""
        return tuple(self._watch.sexual)

    @property
    def problem(self) -> str | None:
        """Why the image-side hard block cannot work with this tagger, or None."""
        if not self._watch.missing:
            return None
        return (
            f"the tagger's {TAGS_FILE} lacks the tags {', '.join(self._watch.missing)}: it "
            "cannot tell whether an image shows a minor, so images with a sexual signal are "
            "withheld in every channel (fail closed); configure a WD14 tagger such as "
            "SmilingWolf/wd-vit-tagger-v3"
        )

    @property
    def size(self) -> int:
        """The side of the square input, read from the ONNX graph."""
        return self._graph.size

    @classmethod
    def load(
        cls,
        source: str,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        offline: bool = False,
        threads: int = 2,
        device: str = "cpu",
        hard_block: ImageHardBlockSettings | None = None,
    ) -> Tagger:
        """Load from a folder, an ``.onnx`` file or a hub repo id; raises
        :class:`ClassifierUnavailable` naming ``source`` when anything is missing or broken.

        A tag list without the hard block's required minor tags still loads: check
        :attr:`problem` (the bot logs it as an error and shows it in ``/settings show``)."""
        if threads < 1:
            raise ValueError(f"threads must be at least 1 (got {threads})")
        model_path, tags_path = _locate(
            source,
            revision=revision or None,
            cache_dir=str(cache_dir) if cache_dir else None,
            offline=offline,
        )
        for path in (model_path, tags_path):
            if not path.is_file():
                raise ClassifierUnavailable(source, f"{path.name} not found at {path}")
        tag_count, ratings = read_rating_rows(tags_path, source)
        watch = _Watch.of(read_tag_names(tags_path, source), hard_block or ImageHardBlockSettings())
        try:
            ort = importlib.import_module("onnxruntime")
        except ImportError:
            raise ClassifierUnavailable(
                source, "onnxruntime is not installed (pip install onnxruntime)"
            ) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        providers = _providers(ort, device, source)
        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=providers
            )
        except Exception as exc:
            raise ClassifierUnavailable(
                source, f"cannot load {model_path}: {type(exc).__name__}: {exc}"
            ) from None
        graph = _read_graph(session, tag_count, source)
        return cls(
            session,
            source=source,
            graph=graph,
            tag_count=tag_count,
            ratings=ratings,
            watch=watch,
            categories=read_tag_categories(tags_path, source),
        )

    @classmethod
    def from_settings(cls, settings: ClassifierSettings) -> Tagger:
        """:meth:`load` with ``moderation.classifier``."""
        return cls.load(
            settings.source,
            revision=settings.revision,
            cache_dir=settings.cache_dir,
            offline=settings.offline,
            threads=settings.threads,
            device=settings.device,
            hard_block=settings.hard_block,
        )

    def rate(self, image: Image.Image) -> RatingScores:
        """The four rating scores of ``image`` and its hard-block signals (see the module
        docstring); blocking: call it from a worker thread."""
        return self._rating_scores(self._run(image))

    def tag_scores(
        self,
        image: Image.Image,
        *,
        general_threshold: float,
        character_threshold: float,
    ) -> TagScores:
        """The general and copyright tags of ``image`` scoring over ``general_threshold``,
        its character tags over ``character_threshold`` (each group highest first), and
        its rating scores (as :meth:`rate`); blocking: call it from a worker thread."""
        if not self._categories:
            raise ClassifierUnavailable(self.source, f"its {TAGS_FILE} was not read")
        scores = self._run(image)
        groups: dict[int, list[tuple[str, float]]] = {
            GENERAL_CATEGORY: [],
            COPYRIGHT_CATEGORY: [],
            CHARACTER_CATEGORY: [],
        }
        for row, (name, category) in enumerate(self._categories):
            group = groups.get(category)
            if group is None:
                continue
            limit = character_threshold if category == CHARACTER_CATEGORY else general_threshold
            score = float(scores[row])
            if score > limit:
                group.append((name, score))
        for group in groups.values():
            group.sort(key=lambda item: -item[1])
        return TagScores(
            self._rating_scores(scores),
            general=tuple(groups[GENERAL_CATEGORY]),
            character=tuple(groups[CHARACTER_CATEGORY]),
            copyright=tuple(groups[COPYRIGHT_CATEGORY]),
        )

    def _run(self, image: Image.Image) -> npt.NDArray[np.float64]:
        """One score per row of the tag list."""
        batch = prepare(image, self.size)
        try:
            outputs = self._session.run([self._graph.output_name], {self._graph.input_name: batch})
        except Exception as exc:
            raise ClassifierUnavailable(
                self.source, f"failed on an image: {type(exc).__name__}: {exc}"
            ) from None
        scores = np.asarray(outputs[0], dtype=np.float64).reshape(-1)
        if scores.shape[0] != self._tag_count or not np.all(np.isfinite(scores)):
            raise ClassifierUnavailable(
                self.source,
                f"gave {scores.shape[0]} scores for {self._tag_count} tags, or scores that "
                "are not numbers",
            )
        return scores

    def _rating_scores(self, scores: npt.NDArray[np.float64]) -> RatingScores:
        general, sensitive, questionable, explicit = (float(scores[i]) for i in self._ratings)
        watch = self._watch
        limits = watch.settings
        minors = {
            tag: float(scores[row])
            for tag, row in watch.minors.items()
            if scores[row] > limits.minor_threshold
        }
        sexual = {
            f"rating:{name}": score
            for name, score, limit in (
                ("explicit", explicit, limits.explicit_threshold),
                ("questionable", questionable, limits.questionable_threshold),
            )
            if score > limit
        }
        sexual.update(
            (tag, float(scores[row]))
            for tag, row in watch.sexual.items()
            if scores[row] > limits.sexual_tag_threshold
        )
        return RatingScores(
            general,
            sensitive,
            questionable,
            explicit,
            minors=minors,
            sexual=sexual,
            minors_checked=not watch.missing,
        )
