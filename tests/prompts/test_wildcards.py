"""Wildcards: seeded, nested, and confined to their folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.prompts import (
    EmptyWildcardError,
    InvalidWildcardNameError,
    PromptError,
    UnknownWildcardError,
    WildcardError,
    WildcardFolder,
    WildcardLimitError,
    WildcardsNotConfiguredError,
    WildcardSource,
    expand_wildcards,
)
from bot.prompts.wildcards import (
    WildcardOutsideFolderError,
    find_wildcards,
    is_valid_wildcard_name,
)

COLORS = [f"color{i}" for i in range(20)]


class DictSource:
    """An in-memory source, to show that anything with ``options`` will do."""

    def __init__(self, files: dict[str, list[str]]) -> None:
        self.files = files
        self.asked: list[str] = []

    def options(self, name: str) -> Sequence[str]:
        self.asked.append(name)
        if name not in self.files:
            raise UnknownWildcardError(name, f"unknown wildcard __{name}__")
        return self.files[name]


@pytest.fixture
def folder(tmp_path: Path) -> WildcardFolder:
    root = tmp_path / "wildcards"
    (root / "colors").mkdir(parents=True)
    (root / "color.txt").write_text("\n".join(COLORS) + "\n", encoding="utf-8")
    (root / "colors" / "warm.txt").write_text("red\norange\n", encoding="utf-8")
    (root / "hair.txt").write_text(
        "# hair styles\n\n   \n__color__ hair\n  # not this either\n", encoding="utf-8"
    )
    (root / "outfit.txt").write_text("__hair__, __color__ dress\n", encoding="utf-8")
    (root / "loop.txt").write_text("__loop__ again\n", encoding="utf-8")
    (root / "empty.txt").write_text("# nothing\n\n", encoding="utf-8")
    (root / "bom.txt").write_text("\ufefffirst\n", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("the secret\n", encoding="utf-8")
    return WildcardFolder(root)


def test_folder_is_a_source(folder: WildcardFolder) -> None:
    source: WildcardSource = folder
    assert source.options("colors/warm") == ["red", "orange"]
    assert folder.options("hair") == ["__color__ hair"]
    assert folder.options("bom") == ["first"]


def test_text_without_wildcards_is_unchanged() -> None:
    text = "1girl, ^_^, >_<, o_o, long_hair, ^__^, a__"
    assert expand_wildcards(text, None, seed=1) == text
    assert find_wildcards(text) == []


def test_a_choice_is_a_line_of_the_file(folder: WildcardFolder) -> None:
    for seed in range(20):
        assert expand_wildcards("__colors/warm__", folder, seed=seed) in {"red", "orange"}


def test_seeded_choices_reproduce(folder: WildcardFolder) -> None:
    text = "1girl, __color__, __color__, __color__ eyes"
    runs = {expand_wildcards(text, folder, seed=seed) for seed in range(30)}
    assert len(runs) > 1  # the seed matters
    for seed in range(30):
        assert expand_wildcards(text, folder, seed=seed) == expand_wildcards(
            text, folder, seed=seed
        )


def test_occurrences_draw_independently(folder: WildcardFolder) -> None:
    results = [expand_wildcards("__color__|__color__", folder, seed=s) for s in range(30)]
    assert any(len(set(result.split("|"))) == 2 for result in results)


def test_a_choice_depends_on_its_position_only(folder: WildcardFolder) -> None:
    alone = expand_wildcards("__color__", folder, seed=7)
    assert expand_wildcards("__color__, __colors/warm__", folder, seed=7).startswith(alone)
    assert expand_wildcards("1girl, __color__, solo", folder, seed=7) == f"1girl, {alone}, solo"


def test_prompt_and_negative_streams_differ(folder: WildcardFolder) -> None:
    pairs = [
        (
            expand_wildcards("__color__", folder, seed=s, stream="prompt"),
            expand_wildcards("__color__", folder, seed=s, stream="negative"),
        )
        for s in range(30)
    ]
    assert any(a != b for a, b in pairs)


def test_nested_wildcards_expand(folder: WildcardFolder) -> None:
    result = expand_wildcards("__outfit__", folder, seed=3)
    hair, dress = result.split(", ")
    assert hair.endswith(" hair")
    assert hair.removesuffix(" hair") in COLORS
    assert dress.removesuffix(" dress") in COLORS
    assert "__" not in result
    assert result == expand_wildcards("__outfit__", folder, seed=3)


def test_nested_positions_are_distinct() -> None:
    source = DictSource({"pair": ["__n__ __n__"], "n": [str(i) for i in range(50)]})
    results = [expand_wildcards("__pair__", source, seed=s) for s in range(10)]
    assert any(a != b for a, b in (r.split() for r in results))


def test_self_reference_hits_the_depth_limit(folder: WildcardFolder) -> None:
    with pytest.raises(WildcardLimitError, match="deeper than 8 levels at __loop__"):
        expand_wildcards("__loop__", folder, seed=1)
    with pytest.raises(WildcardLimitError):
        expand_wildcards("__outfit__", folder, seed=1, max_depth=2)
    assert expand_wildcards("__outfit__", folder, seed=1, max_depth=3)


def test_expansion_count_is_limited() -> None:
    fan = DictSource({"fan": ["__leaf__ " * 10], "leaf": ["x"]})
    assert expand_wildcards("__fan__", fan, seed=1).split() == ["x"] * 10
    with pytest.raises(WildcardLimitError, match="more than 5 times"):
        expand_wildcards("__fan__", fan, seed=1, max_expansions=5)


def test_unknown_wildcard_names_it(folder: WildcardFolder) -> None:
    with pytest.raises(UnknownWildcardError) as caught:
        expand_wildcards("1girl, __hairstyle__", folder, seed=1)
    assert str(caught.value) == f"unknown wildcard __hairstyle__: no hairstyle.txt in {folder.root}"
    assert caught.value.name == "hairstyle"
    assert isinstance(caught.value, WildcardError)
    assert isinstance(caught.value, PromptError)


def test_unknown_wildcard_in_a_subfolder(folder: WildcardFolder) -> None:
    with pytest.raises(UnknownWildcardError, match=r"no colors/cold\.txt in"):
        expand_wildcards("__colors/cold__", folder, seed=1)


def test_empty_wildcard_file(folder: WildcardFolder) -> None:
    with pytest.raises(EmptyWildcardError, match="__empty__"):
        expand_wildcards("__empty__", folder, seed=1)
    with pytest.raises(EmptyWildcardError):
        expand_wildcards("__none__", DictSource({"none": []}), seed=1)


def test_wildcard_without_a_folder() -> None:
    with pytest.raises(WildcardsNotConfiguredError, match="__hair__") as caught:
        expand_wildcards("1girl, __hair__", None, seed=1)
    assert caught.value.name == "hair"


@pytest.mark.parametrize(
    "name", ["../secret", "colors/../../secret", "/etc/passwd", "a\\b", "a/./b", ".hidden", "a//b"]
)
def test_path_traversal_is_refused(folder: WildcardFolder, name: str) -> None:
    with pytest.raises(InvalidWildcardNameError, match="invalid wildcard name"):
        expand_wildcards(f"1girl, __{name}__", folder, seed=1)
    with pytest.raises(InvalidWildcardNameError):
        folder.options(name)
    with pytest.raises(InvalidWildcardNameError):  # checked before any source is asked
        expand_wildcards(f"__{name}__", DictSource({}), seed=1)


def test_names() -> None:
    assert is_valid_wildcard_name("hair")
    assert is_valid_wildcard_name("hair_color-2")
    assert is_valid_wildcard_name("colors/warm")
    assert not is_valid_wildcard_name("")
    assert not is_valid_wildcard_name("..")
    assert not is_valid_wildcard_name("a b")
    assert find_wildcards("__a__, __b/c__ and __hair_color__") == ["a", "b/c", "hair_color"]


def test_the_source_is_asked_by_name() -> None:
    source = DictSource({"a": ["x"], "b/c": ["y"]})
    assert expand_wildcards("__a__ __b/c__", source, seed=0) == "x y"
    assert source.asked == ["a", "b/c"]


# --- symbolic links -------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> tuple[WildcardFolder, Path]:
    """A wildcard folder with links inside it and links leading out of it."""
    root = tmp_path / "wildcards"
    (root / "colors").mkdir(parents=True)
    (root / "colors" / "warm.txt").write_text("red\norange\n", encoding="utf-8")
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("the owner's private notes\n", encoding="utf-8")
    (outside / "deep" / "more.txt").write_text("more private notes\n", encoding="utf-8")
    (root / "alias.txt").symlink_to(root / "colors" / "warm.txt")  # stays inside: fine
    (root / "hues").symlink_to(root / "colors", target_is_directory=True)  # inside too
    (root / "secret.txt").symlink_to(outside / "secret.txt")
    (root / "escape").symlink_to(outside / "deep", target_is_directory=True)
    (root / "relative.txt").symlink_to(Path("..") / "outside" / "secret.txt")
    return WildcardFolder(root), outside


def test_links_inside_the_folder_are_followed(linked: tuple[WildcardFolder, Path]) -> None:
    folder, _ = linked
    assert folder.options("alias") == ["red", "orange"]
    assert folder.options("hues/warm") == ["red", "orange"]


@pytest.mark.parametrize("name", ["secret", "escape/more", "relative"])
def test_links_out_of_the_folder_are_refused(
    linked: tuple[WildcardFolder, Path], name: str
) -> None:
    folder, _ = linked
    with pytest.raises(WildcardOutsideFolderError) as info:
        expand_wildcards(f"1girl, __{name}__", folder, seed=1)
    message = str(info.value)
    assert f"wildcard __{name}__ is refused" in message
    assert "leads out of the wildcard folder" in message
    assert "private notes" not in message
    assert isinstance(info.value, PromptError)


def test_a_link_loop_is_refused_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "wildcards"
    root.mkdir()
    (root / "a.txt").symlink_to(root / "b.txt")
    (root / "b.txt").symlink_to(root / "a.txt")
    with pytest.raises(WildcardError):
        WildcardFolder(root).options("a")
