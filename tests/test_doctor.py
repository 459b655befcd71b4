"""``python -m bot doctor``'s checks, each against the real thing: SQLite files at, behind
and ahead of the newest revision (and one that is missing, which must stay missing), the
tiny model folder, a hub that cannot be reached and a local one that answers, a real
redis-server with worker heartbeats, the tiny tagger, the fake Discord."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from aiohttp import web

from bot import doctor
from bot.cli import main
from bot.config import Settings
from bot.doctor import OK, PROBLEM, WARN, Check, Context, Options
from bot.queue import protocol
from bot.storage import head, prepare_database, upgrade
from tests.conftest import tiny_settings
from tests.e2e.fake_discord import (
    DEFAULT_GUILD_ID,
    FakeDiscord,
    FakeGuild,
    Permission,
    default_guild,
)
from tests.support.redis_server import RedisServer, free_port
from tests.support.tiny_tagger import save_tiny_tagger

TOKEN_LIKE = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA.GaBcDe.abcdefghijklmnopqrstuvwxyz012345"


def settings_for(model: Path, tmp_path: Path, **env: str) -> Settings:
    base = {
        "ANIMAGINE_DATABASE__URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "ANIMAGINE_MODERATION__CLASSIFIER__SOURCE": "",
    }
    return tiny_settings(model, **{**base, **env})


# --------------------------------------------------------------------------- database
def test_a_missing_sqlite_file_is_a_warning_and_is_not_created(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    where = tmp_path / "state" / "bot.db"
    settings = settings_for(tiny_model_dir, tmp_path, ANIMAGINE_DATABASE__URL=f"sqlite:///{where}")
    check = doctor.check_database(settings)
    assert check.status == WARN  # a first start: the bot creates it
    assert check.detail == f"{where}: not created yet (the bot creates it when it starts)"
    assert "python -m bot db upgrade" in check.fix
    assert not where.exists()
    assert not where.parent.exists()


def test_the_database_at_behind_and_ahead_of_the_newest_revision(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    where = tmp_path / "bot.db"
    url = f"sqlite:///{where}"
    settings = settings_for(tiny_model_dir, tmp_path, ANIMAGINE_DATABASE__URL=url)
    upgrade(url, "0002")
    behind = doctor.check_database(settings)
    assert (behind.status, behind.detail) == (
        PROBLEM,
        f"{where} at revision 0002, behind the newest ({head()})",
    )
    upgrade(url)
    files = sorted(tmp_path.iterdir())
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    at_head = doctor.check_database(settings)
    assert (at_head.status, at_head.detail) == (OK, f"{where} at revision {head()} (newest)")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.iterdir())}
    assert after == before  # read-only: not a byte changed, no file added
    running = prepare_database(settings)  # the bot running: its write-ahead log is open
    try:
        assert where.with_name("bot.db-wal").exists()
        assert doctor.check_database(settings).status == OK
    finally:
        running.close()
    with sqlite3.connect(where) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    ahead = doctor.check_database(settings)
    assert ahead.status == PROBLEM
    assert "revision '9999', which this version of the bot does not know" in ahead.detail


# --------------------------------------------------------------------------- model
def test_the_tiny_model_folder_is_present_and_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    ctx = Context(settings_for(tiny_model_dir, tmp_path))
    present = doctor.check_model(ctx)
    assert present.status == OK
    assert present.detail.startswith(f"diffusers folder {tiny_model_dir} (")
    loads = doctor.check_model_loads(ctx)
    assert loads.status == OK
    assert loads.detail.endswith("on cpu in float32")
    skipped = doctor.check_model_loads(Context(ctx.settings, Options(load=False), model_local=True))
    assert (skipped.status, skipped.detail) == (WARN, "not tried (--no-load)")


def test_a_model_folder_without_weights_is_a_problem(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    ctx = Context(settings_for(folder, tmp_path))
    check = doctor.check_model(ctx)
    assert check.status == PROBLEM
    assert check.detail == (
        f"{folder}: diffusers folder without text_encoder weights, text_encoder_2 weights, "
        "unet weights, vae weights"
    )
    assert doctor.check_model_loads(ctx).detail == "not tried: the model is not on this machine"


def hub_settings(model: Path, tmp_path: Path, **env: str) -> Settings:
    return settings_for(
        model,
        tmp_path,
        ANIMAGINE_MODEL__SOURCE="example/tiny-sdxl",
        ANIMAGINE_MODEL__CACHE_DIR=str(tmp_path / "hf"),
        **env,
    )


def test_a_hub_model_not_in_the_cache_offline_or_with_the_hub_unreachable(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    offline = doctor.check_model(
        Context(hub_settings(tiny_model_dir, tmp_path, ANIMAGINE_MODEL__OFFLINE="true"))
    )
    assert offline.status == PROBLEM
    assert offline.detail == (
        f"example/tiny-sdxl is not in the Hugging Face cache {tmp_path / 'hf'} and the hub is "
        "off (offline)"
    )
    assert "hf download example/tiny-sdxl" in offline.fix
    closed = Options(hub_endpoint=f"http://127.0.0.1:{free_port()}", hub_timeout_s=3.0)
    ctx = Context(hub_settings(tiny_model_dir, tmp_path), closed)
    unreachable = doctor.check_model(ctx)
    assert unreachable.status == PROBLEM
    assert "the hub cannot be reached" in unreachable.detail
    assert unreachable.detail.endswith("the download is about 14 GB")
    assert ctx.download_bytes == 14 * doctor.GB
    assert not (tmp_path / "hf").exists()  # nothing was downloaded, no cache made


def tiny_files(folder: Path) -> list[tuple[str, int]]:
    return [
        (p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def test_the_download_size_counts_one_set_of_weights_per_component(tiny_model_dir: Path) -> None:
    files = tiny_files(tiny_model_dir)
    small = [
        s
        for name, s in files
        if name == "model_index.json" or ("/" in name and name.endswith((".json", ".txt")))
    ]
    plain = [s for name, s in files if name.endswith(".safetensors") and name.count(".") == 1]
    fp16 = [s for name, s in files if name.endswith(".fp16.safetensors")]
    assert plain
    assert fp16
    assert doctor.download_size(files, "") == sum(small) + sum(plain)
    assert doctor.download_size(files, "fp16") == sum(small) + sum(fp16)


@pytest.fixture
async def fake_hub(tiny_model_dir: Path) -> AsyncIterator[str]:
    """A local stand-in for the hub's model API, listing the tiny model's files."""

    async def model_info(request: web.Request) -> web.Response:
        repo = f"{request.match_info['org']}/{request.match_info['name']}"
        siblings = [{"rfilename": n, "size": s} for n, s in tiny_files(tiny_model_dir)]
        return web.json_response({"id": repo, "sha": "0" * 40, "siblings": siblings})

    app = web.Application()
    app.router.add_get("/api/models/{org}/{name}", model_info)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_hub_model_not_downloaded_yet_says_how_big_its_download_is(
    tiny_model_dir: Path, tmp_path: Path, fake_hub: str
) -> None:
    ctx = Context(hub_settings(tiny_model_dir, tmp_path), Options(hub_endpoint=fake_hub))
    check = await asyncio.to_thread(doctor.check_model, ctx)
    expected = doctor.download_size(tiny_files(tiny_model_dir), "")
    assert check.status == WARN
    assert check.detail.startswith("example/tiny-sdxl is not downloaded yet: the bot downloads ")
    assert ctx.download_bytes == expected
    assert not (tmp_path / "hf").exists()


# --------------------------------------------------------------------------- GPU
def test_memory_needs_follow_the_readme_figures() -> None:
    one_megapixel = doctor.memory_need(1024 * 1024, 1)
    assert 10 <= one_megapixel <= 12.5  # "832x1216 or 1024x1024 needs about 10-12 GB"
    assert doctor.memory_need(1536 * 1536, 1) >= 15.5  # hires x1.5: "16 GB or more"
    assert doctor.memory_need(1024 * 1024, 4) >= 16  # count = 4: "16 GB or more"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_cuda_the_cpu_is_a_warning_and_cuda_a_problem(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    for device in ("auto", "cpu"):
        check = doctor.check_gpu(
            settings_for(tiny_model_dir, tmp_path, ANIMAGINE_ENGINE__DEVICE=device)
        )
        assert (check.status, check.detail) == (
            WARN,
            "no CUDA GPU: the engine runs on the CPU in float32 (minutes per image)",
        )
    cuda = doctor.check_gpu(settings_for(tiny_model_dir, tmp_path, ANIMAGINE_ENGINE__DEVICE="cuda"))
    assert cuda.status == PROBLEM
    assert 'engine.device = "cpu"' in cuda.fix


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gpu_and_its_free_memory(tiny_model_dir: Path, tmp_path: Path) -> None:
    check = doctor.check_gpu(
        settings_for(tiny_model_dir, tmp_path, ANIMAGINE_ENGINE__DEVICE="auto")
    )
    assert check.status in (OK, WARN, PROBLEM)
    assert check.detail.startswith(torch.cuda.get_device_name(0))
    assert "GB free; needs about" in check.detail


# --------------------------------------------------------------------------- Redis
@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def beat(name: str, *, version: int = protocol.PROTOCOL_VERSION, model: str = "") -> str:
    return protocol.heartbeat_message(
        protocol.Heartbeat(
            name=name,
            host="gpu-host",
            gpu="NVIDIA H100",
            model=model,
            state="idle",
            jobs_done=3,
            at=time.time(),
            version=version,
        )
    )


async def test_redis_and_its_workers(
    tiny_model_dir: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    from redis.asyncio import Redis

    settings = settings_for(
        tiny_model_dir,
        tmp_path,
        ANIMAGINE_QUEUE__BACKEND="redis",
        ANIMAGINE_QUEUE__REDIS_URL=redis_server.url,
    )
    redis_check, workers = await doctor.redis_checks(settings)
    assert (redis_check.status, redis_check.detail) == (
        OK,
        f"{redis_server.url} answers (Redis {redis_server.version()})",
    )
    assert workers.status == PROBLEM
    assert workers.detail == "no worker has reported in the last 3 s: jobs would wait"
    assert "python -m bot worker" in workers.fix
    client = Redis.from_url(redis_server.url)
    try:
        source = settings.model.source
        await client.set("animagine:worker:gpu-1", beat("gpu-1", model=source), px=3000)
        _, workers = await doctor.redis_checks(settings)
        assert (workers.status, workers.detail) == (OK, "1 worker(s): gpu-1 (NVIDIA H100, idle)")
        await client.set("animagine:worker:old-1", beat("old-1", version=1), px=3000)
        _, workers = await doctor.redis_checks(settings)
        assert workers.status == PROBLEM
        assert workers.detail.startswith("1 worker(s) of another release: old-1 (protocol 1)")
        assert workers.fix == "run the same release on the bot and workers"
        assert await client.keys("*") != []  # what the workers wrote is still there
        assert set(await client.keys("*")) == {b"animagine:worker:gpu-1", b"animagine:worker:old-1"}
    finally:
        await client.aclose()


async def test_redis_that_does_not_answer(tiny_model_dir: Path, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = settings_for(
        tiny_model_dir, tmp_path, ANIMAGINE_QUEUE__BACKEND="redis", ANIMAGINE_QUEUE__REDIS_URL=url
    )
    redis_check, workers = await doctor.redis_checks(settings)
    assert redis_check.status == PROBLEM
    assert redis_check.detail.startswith(f"cannot reach Redis at {url}")
    assert (workers.status, workers.detail) == (WARN, "not checked: Redis did not answer")


# --------------------------------------------------------------------------- tagger
def test_the_tagger_and_the_tags_moderation_needs(tiny_model_dir: Path, tmp_path: Path) -> None:
    good = save_tiny_tagger(tmp_path / "tagger")
    check = doctor.check_tagger(
        settings_for(tiny_model_dir, tmp_path, ANIMAGINE_MODERATION__CLASSIFIER__SOURCE=str(good))
    )
    assert (check.status, check.detail) == (
        OK,
        f"{good} loads; the hard block watches 10 minor and 10 sexual tags",
    )
    blind = save_tiny_tagger(tmp_path / "blind", hard_block_tags=False)
    check = doctor.check_tagger(
        settings_for(tiny_model_dir, tmp_path, ANIMAGINE_MODERATION__CLASSIFIER__SOURCE=str(blind))
    )
    assert check.status == PROBLEM
    assert "lacks the tags loli, shota, child" in check.detail
    none = doctor.check_tagger(settings_for(tiny_model_dir, tmp_path))
    assert none.status == WARN
    assert none.fix == 'set moderation.classifier.source = "SmilingWolf/wd-vit-tagger-v3"'
    missing = doctor.check_tagger(
        settings_for(
            tiny_model_dir,
            tmp_path,
            ANIMAGINE_MODERATION__CLASSIFIER__SOURCE="example/tagger",
            ANIMAGINE_MODERATION__CLASSIFIER__CACHE_DIR=str(tmp_path / "hf"),
            ANIMAGINE_MODERATION__CLASSIFIER__OFFLINE="true",
        )
    )
    assert missing.status == PROBLEM
    assert (
        missing.fix == "download it first: hf download example/tagger model.onnx selected_tags.csv"
    )


# --------------------------------------------------------------------------- disk
def test_free_disk_for_the_kept_images(tiny_model_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "1").mkdir(parents=True)
    (images / "1" / "0.png").write_bytes(b"\0" * (2 * doctor.MIB))
    ok = doctor.check_disk(
        Context(settings_for(tiny_model_dir, tmp_path, ANIMAGINE_DELIVERY__IMAGES_DIR=str(images)))
    )
    assert ok.status == OK
    assert ok.detail.startswith(f"images {images}: ")
    assert ok.detail.endswith(" free (keeps up to 4096 MiB, 2 MiB now)")
    huge = settings_for(
        tiny_model_dir,
        tmp_path,
        ANIMAGINE_DELIVERY__IMAGES_DIR=str(tmp_path / "not-yet"),
        ANIMAGINE_DELIVERY__KEEP_MIB="10000000",  # 10 TB
    )
    short = doctor.check_disk(Context(huge))
    assert short.status == PROBLEM
    assert "lower delivery.keep_mib" in short.fix
    assert not (tmp_path / "not-yet").exists()


# --------------------------------------------------------------------------- Discord
async def discord_checks(
    fake: FakeDiscord, settings: Settings, token: str | None = None
) -> dict[str, Check]:
    env_settings = settings.model_copy(
        update={
            "discord": settings.discord.model_copy(
                update={"rest_url": fake.rest_base, "token": _secret(token or fake.token)}
            )
        }
    )
    checks = await doctor.discord_checks(env_settings, Options(discord_timeout_s=3.0))
    return {c.name: c for c in checks}


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


async def sync_commands(
    fake: FakeDiscord, payloads: list[dict[str, Any]], guild: int | None = None
) -> None:
    path = (
        f"/applications/{fake.application_id}" + (f"/guilds/{guild}" if guild else "") + "/commands"
    )
    headers = {"Authorization": f"Bot {fake.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.put(f"{fake.rest_base}{path}", json=payloads) as response,
    ):
        assert response.status == 200


def lacking_guild() -> FakeGuild:
    return FakeGuild(
        900_000_000_000_000_500,
        "Other Server",
        everyone_permissions=Permission.VIEW_CHANNEL | Permission.SEND_MESSAGES,
        bot_permissions=Permission.READ_MESSAGE_HISTORY | Permission.SEND_MESSAGES_IN_THREADS,
    )


@pytest.mark.parametrize("from_roles", [False, True], ids=["guild-list", "member-and-roles"])
async def test_permissions_in_each_server_and_commands_synced(
    tiny_model_dir: Path, tmp_path: Path, from_roles: bool
) -> None:
    settings = settings_for(tiny_model_dir, tmp_path)
    async with FakeDiscord(guilds=[default_guild(), lacking_guild()]) as fake:
        fake.guild_list_permissions = not from_roles
        wanted = await doctor.command_payloads()
        await sync_commands(fake, wanted)
        checks = await discord_checks(fake, settings)
        if from_roles:
            assert fake.requests_to("GET", r"/guilds/\d+/roles")
    assert [c.status for c in checks.values()] == [OK, OK, PROBLEM, OK]
    assert (
        checks["token"].detail
        == "accepted: bot animagine-test (900000000000000001), from the settings"
    )
    assert checks["permissions"].detail == (
        "1 of 2 server(s): Other Server (900000000000000500) lacks Embed Links, Attach Files"
    )
    assert "permissions=274878024704" in checks["permissions"].fix
    assert checks["commands"].detail == f"synced globally: {len(wanted)} commands"


async def test_commands_missing_outdated_and_stale_and_for_development_servers(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(tiny_model_dir, tmp_path)
    wanted = await doctor.command_payloads()
    changed = [dict(c) for c in wanted if c["name"] not in ("help", "Who made this?")]
    for command in changed:
        if command["name"] == "imagine":
            command["description"] = "an older description"
    changed.append({"name": "old-command", "description": "gone", "type": 1})
    async with FakeDiscord() as fake:
        await sync_commands(fake, changed)
        checks = await discord_checks(fake, settings)
        dev = settings.model_copy(
            update={
                "discord": settings.discord.model_copy(update={"dev_guilds": [DEFAULT_GUILD_ID]})
            }
        )
        await sync_commands(fake, wanted, guild=DEFAULT_GUILD_ID)
        dev_checks = await discord_checks(fake, dev)
    assert checks["commands"].status == PROBLEM
    assert checks["commands"].detail == (
        "not synced globally: global: missing /help, 'Who made this?' (message menu); "
        "outdated /imagine; not the bot's (any more) /old-command"
    )
    assert "python -m bot run" in checks["commands"].fix
    assert dev_checks["commands"].detail == (
        f"synced to the development server(s) {DEFAULT_GUILD_ID}: {len(wanted)} commands"
    )


async def test_the_install_link(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = settings_for(tiny_model_dir, tmp_path)
    async with FakeDiscord(install_params=None) as fake:
        none = (await discord_checks(fake, settings))["application"]
    async with FakeDiscord(install_params={"scopes": ["bot"], "permissions": "3072"}) as fake:
        narrow = (await discord_checks(fake, settings))["application"]
    assert none.status == WARN
    assert (
        none.detail
        == "animagine-test (900000000000000001): no install link is set in the developer portal"
    )
    assert "client_id=900000000000000001&scope=bot+applications.commands" in none.fix
    assert narrow.status == PROBLEM
    assert narrow.detail == (
        "animagine-test (900000000000000001): the install link lacks the scope(s) "
        "applications.commands and lacks the permission(s) Send Messages in Threads, "
        "Embed Links, Attach Files, Read Message History"
    )


async def test_a_rejected_token_and_a_discord_that_is_down(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(tiny_model_dir, tmp_path)
    async with FakeDiscord() as fake:
        rejected = await discord_checks(fake, settings, token=TOKEN_LIKE)
        fake.fail_for("GET", "/users/@me", 60, status=502, html=True)
        down = await discord_checks(fake, settings)
        fake.recover()
    assert rejected["token"].status == PROBLEM
    assert (
        rejected["token"].detail
        == "Discord rejected the token (401 Unauthorized), from the settings"
    )
    assert rejected["commands"].detail == "not checked: the token was not accepted"
    assert down["token"].status == PROBLEM
    assert down["token"].detail.startswith(f"cannot reach Discord's REST API at {fake.rest_base}")
    assert "answered 502" in down["token"].detail
    assert [c.status for c in down.values()] == [PROBLEM, WARN, WARN, WARN]
    closed = settings.model_copy(
        update={
            "discord": settings.discord.model_copy(
                update={
                    "rest_url": f"http://127.0.0.1:{free_port()}/api/v10",
                    "token": _secret(TOKEN_LIKE),
                }
            )
        }
    )
    ((token, *_),) = [await doctor.discord_checks(closed, Options(discord_timeout_s=3.0))]
    assert token.status == PROBLEM
    assert "no connection" in token.detail


# --------------------------------------------------------------------------- output and CLI
def test_text_and_json_rendering_and_the_exit_status() -> None:
    checks = [
        Check("database", OK, "sqlite at revision 0003 (newest)"),
        Check("gpu", WARN, "no CUDA GPU", "use a GPU"),
        Check("token", PROBLEM, f"rejected {TOKEN_LIKE}", "reset it"),
    ]
    text = doctor.scrub(doctor.render_text(checks), [TOKEN_LIKE])
    assert text.splitlines() == [
        "ok       database  sqlite at revision 0003 (newest)",
        "warn     gpu       no CUDA GPU — fix: use a GPU",
        "PROBLEM  token     rejected [redacted: looks like a Discord token] — fix: reset it",
        "1 problem(s), 1 warning(s)",
    ]
    data = json.loads(doctor.render_json(checks))
    assert (data["ok"], data["problems"], data["warnings"]) == (False, 1, 1)
    assert data["checks"][1] == {
        "name": "gpu",
        "status": "warn",
        "detail": "no CUDA GPU",
        "fix": "use a GPU",
    }
    assert doctor.exit_status(checks) == 1
    assert doctor.exit_status(checks[:2]) == 0


@pytest.mark.parametrize("as_json", [False, True])
def test_a_config_that_does_not_load_exits_2_in_the_chosen_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[engine]\nmax_steps = 500\n[model]\nname = "{TOKEN_LIKE}"\n')
    code = main(["doctor", "--no-load", "--config", str(config), *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert code == 2
    assert TOKEN_LIKE not in out + err
    if as_json:
        data = json.loads(out)
        assert data["ok"] is False
        (check,) = data["checks"]
        assert (check["name"], check["status"]) == ("config", "problem")
        assert "engine.max_steps" in check["detail"]
    else:
        assert out.startswith(f"PROBLEM  config  {config}: engine.max_steps")
