"""Configuration: every problem names its key; secrets never show."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.config import REDACTED, ConfigError, Settings, load_settings, redact_tokens

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_documents_every_key_with_its_default() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    defaults = Settings().model_dump(exclude={"discord": {"token"}})
    assert set(data) == set(defaults)
    for section, values in defaults.items():
        assert data[section] == values, section


def test_example_config_loads(tmp_path: Path) -> None:
    settings = load_settings(EXAMPLE, environ={})
    assert settings.model.source == "cagliostrolab/animagine-xl-3.1"
    assert settings.engine.default_sampler == "Euler a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[engine]\nmax_stepz = 3\n", "engine.max_stepz: unknown key"),
        ("[engnie]\n", "engnie: unknown key"),
        ("[engine]\nmax_steps = 'many'\n", "engine.max_steps: Input should be a valid integer"),
        (
            "[engine]\nmax_steps = 500\n",
            "engine.max_steps: Input should be less than or equal to 150",
        ),
        ("[engine]\ndevice = 'tpu'\n", "engine.device: Input should be 'auto', 'cuda' or 'cpu'"),
        ("[model]\noffline = 'yes'\n", "model.offline: Input should be a valid boolean"),
        ("[discord]\ndev_guilds = [-1]\n", "discord.dev_guilds.0: Input should be greater than 0"),
        (
            "[engine]\nmin_side = 1024\nmax_side = 512\n",
            "engine: min_side must not exceed max_side",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert expected in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_invalid_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[engine\n"), environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[engine]\nmax_steps = 40\ndevice = 'cuda'\n")
    settings = load_settings(
        path, environ={"ANIMAGINE_ENGINE__DEVICE": "cpu", "ANIMAGINE_ENGINE__MAX_STEPS": "30"}
    )
    assert settings.engine.device == "cpu"
    assert settings.engine.max_steps == 30


def test_layers_merge_key_by_key_and_unset_keys_keep_their_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits.tiers.default]\nburst = 7\ndaily_quota = 9\n")
    settings = load_settings(path, environ={"ANIMAGINE_LIMITS__TIERS__DEFAULT__BURST": "3"})
    default = settings.limits.tiers["default"]
    assert (default.burst, default.daily_quota) == (3, 9)
    assert default.refill_seconds == Settings().limits.tiers["default"].refill_seconds


def test_directory_as_config_file_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file"):
        load_settings(tmp_path, environ={})


def test_settings_built_directly_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANIMAGINE_ENGINE__MAX_STEPS", "33")
    assert Settings().engine.max_steps == 50
    assert Settings.model_validate({"engine": {"max_steps": 40}}).engine.max_steps == 40
    assert load_settings().engine.max_steps == 33  # load_settings reads os.environ


def test_bad_environment_override_names_the_key() -> None:
    with pytest.raises(
        ConfigError,
        match=r"engine\.max_steps \(from ANIMAGINE_ENGINE__MAX_STEPS\): Input should be a valid",
    ):
        load_settings(environ={"ANIMAGINE_ENGINE__MAX_STEPS": "lots"})


def test_token_from_environment_is_secret_and_never_printed() -> None:
    token = "MTIz.secret-token-value"
    settings = load_settings(environ={"DISCORD_TOKEN": token})
    assert settings.discord.token is not None
    assert settings.discord.token.get_secret_value() == token
    assert token not in repr(settings)
    assert token not in str(settings.model_dump())
    assert token not in settings.model_dump_json()


def test_token_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, f"[discord]\ntoken_file = '{secret}'\n"), environ={})
    assert settings.discord.token is not None
    assert settings.discord.token.get_secret_value() == "from-a-file"


def test_token_in_the_config_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "[discord]\ntoken = 'leaky-token'\n"), environ={})
    assert "does not belong in the config file" in str(info.value)
    assert "leaky-token" not in str(info.value)


def test_unreadable_token_file_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, f"[discord]\ntoken_file = '{tmp_path / 'missing'}'\n")
    with pytest.raises(ConfigError, match=r"discord\.token_file: cannot read"):
        load_settings(path, environ={})


# A token of the right shape (base64 id . 6 chars . 27+ chars); made up, never a real one.
FAKE_TOKEN = "MTEyMzQ1Njc4OTAxMjM0NTY3OA.GxYzAb.abcDEFghiJKLmnoPQRstuVWXyz0123456_-"


@pytest.mark.parametrize(
    "text",
    [
        f"[engine]\ndefault_sampler = '{FAKE_TOKEN}'\n",  # echoed by the validator's message
        f"[engine]\ndevice = '{FAKE_TOKEN}'\n",  # a Literal: echoed as the input
        f"[model]\nsource = ['{FAKE_TOKEN}']\n",  # inside a list
        f"[discord]\ndev_guilds = ['{FAKE_TOKEN}']\n",
        f"[moderation]\nblocked_tags = '{FAKE_TOKEN}'\n",
        f"[engnie]\nx = '{FAKE_TOKEN}'\n",
        f"[model]\nsource = {FAKE_TOKEN}\n",  # not even valid TOML
    ],
)
def test_a_value_that_looks_like_a_token_is_never_echoed(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    message = str(info.value)
    assert FAKE_TOKEN not in message
    assert FAKE_TOKEN.split(".")[2] not in message
    assert str(tmp_path) in message  # still a useful message


def test_a_token_in_an_environment_override_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"ANIMAGINE_ENGINE__DEFAULT_SAMPLER": FAKE_TOKEN})
    message = str(info.value)
    assert FAKE_TOKEN not in message
    assert "engine.default_sampler (from ANIMAGINE_ENGINE__DEFAULT_SAMPLER)" in message
    assert REDACTED in message


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (f"got {FAKE_TOKEN}!", True),
        (f"'{FAKE_TOKEN}'", True),
        ("mfa.abcdefghijklmnopqrstuvwxyz0123", True),
        ("cagliostrolab/animagine-xl-3.1", False),
        ("model.fp16.safetensors", False),
        ("sqlite:///bot.db", False),
        ("1.2.3", False),
    ],
)
def test_redact_tokens(text: str, redacted: bool) -> None:
    assert (redact_tokens(text) != text) is redacted
