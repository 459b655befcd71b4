"""The [moderation] settings section and what importing the package costs."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest
from pydantic import BaseModel, ValidationError

from bot.moderation import ClassifierSettings, GuildOverrides, GuildPolicy, ModerationSettings
from bot.moderation.lists import DEFAULT_BLOCKED_TAGS


def test_defaults() -> None:
    settings = ModerationSettings()
    assert settings.classifier == ClassifierSettings(
        source="SmilingWolf/wd-vit-tagger-v3",
        revision="",
        cache_dir="",
        offline=False,
        device="cpu",
        threads=2,
    )
    assert (settings.questionable_threshold, settings.explicit_threshold) == (0.5, 0.3)
    assert settings.fail_closed is True
    assert settings.dm_allowed is False
    assert settings.extra_negatives == ["explicit"]
    assert settings.spoiler == "flagged"
    assert settings.forward_withheld is False
    assert settings.blocked_tags == []
    assert settings.blocked_tags_mode == "extend"
    assert GuildPolicy.from_settings(settings).blocked_tags == DEFAULT_BLOCKED_TAGS


@pytest.mark.parametrize("model", [ModerationSettings, ClassifierSettings, GuildOverrides])
def test_every_key_is_described(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        if name != "classifier":
            assert field.description, name


def test_reads_from_toml() -> None:
    text = """
    questionable_threshold = 0.6
    explicit_threshold = 1
    blocked_tags = ["gore", "blood"]
    extra_negatives = []
    spoiler = "always"
    [classifier]
    source = "/models/wd-vit-tagger-v3"
    threads = 1
    """
    settings = ModerationSettings.model_validate(tomllib.loads(text))
    assert settings.explicit_threshold == 1.0
    assert settings.classifier.threads == 1
    policy = GuildPolicy.from_settings(settings)
    assert policy.blocked_tags[-2:] == ("gore", "blood")
    assert policy.extra_negatives == ()


@pytest.mark.parametrize(
    ("data", "location"),
    [
        ({"explicit_threshold": 1.5}, "explicit_threshold"),
        ({"questionable_threshold": -0.1}, "questionable_threshold"),
        ({"fail_closed": "yes"}, "fail_closed"),
        ({"spoiler": "sometimes"}, "spoiler"),
        ({"blocked_tags": ["ok", "..."]}, "blocked_tags"),
        ({"blocked_tags": "nude"}, "blocked_tags"),
        ({"blocked_tags_mode": "merge"}, "blocked_tags_mode"),
        ({"classifier": {"threads": 0}}, "classifier.threads"),
        ({"classifier": {"device": "tpu"}}, "classifier.device"),
        ({"classifier": {"model": "x"}}, "classifier.model"),
        ({"nsfw_filter": True}, "nsfw_filter"),
    ],
)
def test_bad_values_name_their_key(data: dict[str, object], location: str) -> None:
    with pytest.raises(ValidationError) as info:
        ModerationSettings.model_validate(data)
    locations = {".".join(str(p) for p in error["loc"]) for error in info.value.errors()}
    assert any(loc.startswith(location) for loc in locations), locations


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        ModerationSettings().fail_closed = False  # type: ignore[misc]


def test_importing_the_policy_stays_cheap() -> None:
    """The CLI's `policy check` path and bot.config import this package: keep it light."""
    code = (
        "import json, sys; import bot.moderation; "
        "print(json.dumps(sorted(m for m in ('numpy', 'PIL', 'onnxruntime', 'torch', "
        "'bot.config', 'discord') if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []
