"""``python -m bot doctor`` as an operator runs it, against the fake Discord: a subprocess
with the configuration in its environment, its output read as printed.

Two runs at once (each is mostly the interpreter's start-up): one with the token Discord
accepts, in two servers of which one lacks permissions and with no command synced yet; one
with a token Discord rejects, which must never be printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from bot.storage import head, upgrade
from tests.e2e.fake_discord import FakeDiscord, FakeGuild, Permission, default_guild
from tests.support.tiny_tagger import save_tiny_tagger

OTHER_GUILD_ID = 900_000_000_000_000_500
REJECTED = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA.GaBcDe.abcdefghijklmnopqrstuvwxyz012345"


def lacking_guild() -> FakeGuild:
    """A server where the bot may talk but not embed or attach: no image can be posted."""
    return FakeGuild(
        OTHER_GUILD_ID,
        "Other Server",
        everyone_permissions=Permission.VIEW_CHANNEL | Permission.SEND_MESSAGES,
        bot_permissions=Permission.READ_MESSAGE_HISTORY | Permission.SEND_MESSAGES_IN_THREADS,
    )


async def run_doctor(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "doctor",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_doctor_against_discord_as_an_operator_sees_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    await asyncio.to_thread(upgrade, url)
    tagger = save_tiny_tagger(tmp_path / "tagger")
    async with FakeDiscord(guilds=[default_guild(), lacking_guild()]) as fake:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ANIMAGINE_")}
        base.pop("DISCORD_TOKEN", None)
        env = {
            **base,
            "ANIMAGINE_DISCORD__REST_URL": fake.rest_base,
            "ANIMAGINE_DATABASE__URL": url,
            "ANIMAGINE_MODEL__SOURCE": str(tiny_model_dir),
            "ANIMAGINE_ENGINE__DEVICE": "cpu",
            "ANIMAGINE_ENGINE__MIN_SIDE": "64",
            "ANIMAGINE_ENGINE__DEFAULT_WIDTH": "128",
            "ANIMAGINE_ENGINE__DEFAULT_HEIGHT": "128",
            "ANIMAGINE_MODERATION__CLASSIFIER__SOURCE": str(tagger),
            "ANIMAGINE_DELIVERY__IMAGES_DIR": str(tmp_path / "images"),
        }
        (code, out, err), (bad_code, bad_out, bad_err) = await asyncio.gather(
            run_doctor({**env, "DISCORD_TOKEN": fake.token}, "--json"),
            run_doctor({**env, "DISCORD_TOKEN": REJECTED}, "--no-load"),
        )
        methods = {request.method for request in fake.requests}

    assert code == 1, err
    report = json.loads(out)  # all of stdout is one JSON object
    assert report["ok"] is False
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == [
        "config",
        "token",
        "application",
        "permissions",
        "commands",
        "database",
        "redis",
        "workers",
        "model",
        "gpu",
        "model-load",
        "tagger",
        "disk",
    ]
    status = {name: c["status"] for name, c in checks.items()}
    assert [n for n, s in status.items() if s == "problem"] == ["permissions", "commands"]
    assert status["gpu"] == "warn"  # engine.device = "cpu": it runs, slowly
    assert checks["token"]["detail"] == (
        f"accepted: bot animagine-test ({fake.application_id}), from DISCORD_TOKEN"
    )
    assert checks["permissions"]["detail"] == (
        f"1 of 2 server(s): Other Server ({OTHER_GUILD_ID}) lacks Embed Links, Attach Files"
    )
    assert checks["permissions"]["fix"].startswith(
        "in each server named, give the bot's role those permissions"
    )
    assert (
        "scope=bot+applications.commands&permissions=274878024704" in (checks["permissions"]["fix"])
    )
    assert checks["commands"]["detail"].startswith(
        "not synced globally: global: missing /imagine, /queue, /limits"
    )
    assert "python -m bot run" in checks["commands"]["fix"]
    assert checks["database"]["detail"] == f"{tmp_path / 'bot.db'} at revision {head()} (newest)"
    assert checks["model-load"]["detail"].endswith("on cpu in float32")
    assert checks["tagger"]["status"] == "ok"
    assert fake.token not in out + err
    assert methods == {"GET"}  # Discord was only read

    assert bad_code == 1
    lines = bad_out.splitlines()
    assert lines[1] == (
        "PROBLEM  token        Discord rejected the token (401 Unauthorized), from DISCORD_TOKEN"
        " — fix: reset the token in the developer portal (Bot → Reset Token) and put the new "
        "one in DISCORD_TOKEN or the discord.token_file"
    )
    assert lines[2] == "warn     application  not checked: the token was not accepted"
    assert "warn     model-load   not tried (--no-load)" in lines
    assert REJECTED not in bad_out + bad_err
    assert REJECTED.rsplit(".", maxsplit=1)[-1] not in bad_out + bad_err
