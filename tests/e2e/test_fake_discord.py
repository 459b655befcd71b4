"""The fake Discord against the real discord.py client, over real sockets.

A small ``commands.Bot`` defined here exercises what the project's end-to-end tests rely
on: login and READY, command sync, deferred responses with files, ephemeral replies,
persistent views, modals, channel messages with the bot token, expired interaction tokens,
heartbeats, reconnects, rate limits and unknown routes; and the faults the fake injects on
purpose (outages, HTML answers, held requests, rate limits for a period, invalidated
sessions), some with a plain aiohttp client.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from discord.http import Route

from tests.e2e.fake_discord import (
    ALICE_ID,
    BOB_ID,
    DEFAULT_GUILD_ID,
    EPHEMERAL,
    GENERAL_CHANNEL_ID,
    NSFW_CHANNEL_ID,
    NSFW_THREAD_ID,
    THREAD_ID,
    CallbackType,
    FakeDiscord,
    OptionType,
    running_client,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@dataclass
class Probe:
    """What the bot's callbacks saw, for the tests to assert on."""

    clicked_by: list[int] = field(default_factory=list)
    clicked: asyncio.Event = field(default_factory=asyncio.Event)
    modal_values: dict[str, str] = field(default_factory=dict)
    modal_submitted: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    late_error: discord.HTTPException | None = None
    late_done: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[BaseException] = field(default_factory=list)


class Panel(discord.ui.View):
    """A persistent view: registered at start-up, found by custom_id alone."""

    def __init__(self, probe: Probe) -> None:
        super().__init__(timeout=None)
        self.probe = probe

    @discord.ui.button(label="Go", custom_id="panel:go", style=discord.ButtonStyle.primary)
    async def go(self, interaction: discord.Interaction, _button: discord.ui.Button[Panel]) -> None:
        self.probe.clicked_by.append(interaction.user.id)
        await interaction.response.edit_message(content="clicked", view=self)
        self.probe.clicked.set()


class AskModal(discord.ui.Modal, title="Ask the bot"):
    question: discord.ui.TextInput[AskModal] = discord.ui.TextInput(
        label="Question", custom_id="question"
    )

    def __init__(self, probe: Probe) -> None:
        super().__init__(custom_id="ask-modal")
        self.probe = probe

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.probe.modal_values["question"] = self.question.value
        await interaction.response.send_message(f"asked: {self.question.value}", ephemeral=True)
        self.probe.modal_submitted.set()


class ProbeBot(commands.Bot):
    def __init__(self, probe: Probe) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
        )
        self.probe = probe
        _register_commands(self, probe)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py sleeps 5 s before every non-initial IDENTIFY; tests need not."""

    async def setup_hook(self) -> None:
        self.add_view(Panel(self.probe))
        await self.tree.sync()
        await self.tree.sync(guild=discord.Object(DEFAULT_GUILD_ID))


def _register_commands(bot: ProbeBot, probe: Probe) -> None:
    tree = bot.tree

    @tree.error
    async def on_error(_interaction: discord.Interaction, error: Exception) -> None:
        probe.errors.append(error)

    @tree.command(name="render", description="Render an image")
    async def render(
        interaction: discord.Interaction,
        prompt: str,
        steps: int = 4,
        scale: float = 1.0,
        hires: bool = False,
    ) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(
            f"{prompt}|{steps}|{scale}|{hires}",
            file=discord.File(io.BytesIO(PNG), filename="render.png"),
        )

    @tree.command(name="secret", description="An ephemeral reply")
    async def secret(interaction: discord.Interaction) -> None:
        where = "dm" if interaction.guild is None else "guild"
        await interaction.response.send_message(f"only you ({where})", ephemeral=True)

    @tree.command(name="panel", description="Post the control panel")
    async def panel(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("Control panel", view=Panel(probe))

    @tree.command(name="ask", description="Open a modal")
    async def ask(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(AskModal(probe))

    @tree.command(name="where", description="Report the channel's age restriction")
    async def where(interaction: discord.Interaction) -> None:
        channel = interaction.channel
        nsfw = isinstance(channel, discord.TextChannel | discord.Thread) and channel.is_nsfw()
        await interaction.response.send_message(f"nsfw={nsfw}")

    @tree.command(name="slow", description="Answers after the test releases it")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await probe.release.wait()
        try:
            await interaction.followup.send("late result")
        except discord.HTTPException as error:
            probe.late_error = error
            assert isinstance(interaction.channel, discord.TextChannel)
            await interaction.channel.send("late result (fallback)")
        probe.late_done.set()

    @tree.command(name="dawdle", description="Answers after the 3 s deadline (shortened)")
    async def dawdle(interaction: discord.Interaction) -> None:
        await probe.release.wait()
        try:
            await interaction.response.send_message("too late")
        except discord.HTTPException as error:
            probe.late_error = error
        probe.late_done.set()

    @tree.command(name="preview", description="Reply with a file, replace it, follow up")
    async def preview(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            "step 1", file=discord.File(io.BytesIO(b"one"), filename="step1.png")
        )
        await interaction.edit_original_response(
            content="step 2",
            attachments=[discord.File(io.BytesIO(b"two"), filename="step2.png")],
        )
        extra = await interaction.followup.send("extra", ephemeral=True, wait=True)
        await extra.delete()

    @tree.command(name="model", description="Pick a model (autocomplete)")
    async def model(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(f"model={name}")

    @model.autocomplete("name")
    async def model_names(
        _interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = ["animagine-xl-3.1", "animagine-xl-4.0", "pony"]
        return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

    @app_commands.context_menu(name="Avatar")
    async def avatar(interaction: discord.Interaction, user: discord.Member) -> None:
        await interaction.response.send_message(f"avatar of {user.id}", ephemeral=True)

    tree.add_command(avatar)

    style = app_commands.Group(name="style", description="Style presets")

    @style.command(name="set", description="Choose a style")
    @app_commands.choices(
        name=[
            app_commands.Choice(name="Anime", value="anime"),
            app_commands.Choice(name="Sketch", value="sketch"),
        ]
    )
    async def style_set(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(f"style={name}")

    tree.add_command(style)

    @app_commands.context_menu(name="Upscale")
    async def upscale(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message(f"upscale {message.id}")

    tree.add_command(upscale)

    @tree.command(
        name="guildping", description="A guild command", guild=discord.Object(DEFAULT_GUILD_ID)
    )
    async def guildping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")


@dataclass
class Env:
    fake: FakeDiscord
    bot: ProbeBot
    probe: Probe


@pytest.fixture
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    options: dict[str, Any] = getattr(request, "param", {})
    probe = Probe()
    async with FakeDiscord(**options) as fake:
        bot = ProbeBot(probe)
        async with running_client(bot, fake):
            yield Env(fake, bot, probe)
    assert probe.errors == []


async def test_login_ready_and_guild_available(env: Env) -> None:
    fake, bot = env.fake, env.bot
    assert bot.user is not None
    assert bot.user.id == fake.bot_user.id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(DEFAULT_GUILD_ID)
    assert guild is not None
    assert not guild.unavailable
    assert guild.me is not None
    general = guild.get_channel(GENERAL_CHANNEL_ID)
    nsfw = guild.get_channel(NSFW_CHANNEL_ID)
    assert isinstance(general, discord.TextChannel)
    assert isinstance(nsfw, discord.TextChannel)
    assert not general.is_nsfw()
    assert nsfw.is_nsfw()
    thread = guild.get_thread(NSFW_THREAD_ID)
    assert thread is not None
    assert thread.parent_id == NSFW_CHANNEL_ID
    assert thread.is_nsfw()
    assert guild.member_count == 3  # Alice, Bob and the bot

    routes = [(r.method, r.route) for r in fake.requests]
    assert routes[:2] == [("GET", "/users/@me"), ("GET", "/oauth2/applications/@me")]
    assert all(r.auth == "bot" for r in fake.requests)
    assert len(fake.identifies) == 1
    assert fake.identifies[0]["intents"] == discord.Intents.default().value
    ready = [f for f in fake.gateway_log if f.event == "READY"]
    assert len(ready) == 1
    assert ready[0].payload["s"] == 1

    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{fake.rest_base}/users/@me", headers={"Authorization": f"Bot {fake.token}"}
        ) as response,
    ):
        assert response.headers["Content-Type"] == "application/json"


async def test_wrong_token_is_a_login_failure() -> None:
    async with FakeDiscord() as fake:
        bot = ProbeBot(Probe())
        with fake.patch_discord(), pytest.raises(discord.LoginFailure):
            await bot.login("not-the-token")
        await bot.close()
    assert [(r.route, r.status, r.auth) for r in fake.requests] == [("/users/@me", 401, "invalid")]


async def test_command_sync_is_recorded(env: Env) -> None:
    fake = env.fake
    names = {c["name"] for c in fake.commands()}
    assert {"render", "secret", "panel", "ask", "style", "Upscale"} <= names
    assert [c["name"] for c in fake.commands(DEFAULT_GUILD_ID)] == ["guildping"]
    render = fake.command("render")
    assert render["application_id"] == str(fake.application_id)
    assert {o["name"]: o["type"] for o in render["options"]} == {
        "prompt": OptionType.STRING,
        "steps": OptionType.INTEGER,
        "scale": OptionType.NUMBER,
        "hires": OptionType.BOOLEAN,
    }
    assert fake.command_id("Upscale", type=3) != fake.command_id("render")
    assert fake.command("guildping", DEFAULT_GUILD_ID)["guild_id"] == str(DEFAULT_GUILD_ID)
    synced = await env.bot.tree.fetch_commands()
    assert {c.id for c in synced} == {int(c["id"]) for c in fake.commands()}


async def test_slash_command_defers_then_follows_up_with_a_file(env: Env) -> None:
    fake = env.fake
    handle = await fake.slash_command(
        DEFAULT_GUILD_ID,
        GENERAL_CHANNEL_ID,
        ALICE_ID,
        "render",
        {"prompt": "a cat", "steps": "8", "scale": 1.5, "hires": True},
    )
    options = {o["name"]: (o["type"], o["value"]) for o in handle.payload["data"]["options"]}
    assert options == {
        "prompt": (3, "a cat"),
        "steps": (4, 8),
        "scale": (10, 1.5),
        "hires": (5, True),
    }

    response = await handle.response()
    assert response.type == CallbackType.DEFERRED_CHANNEL_MESSAGE
    assert "with_response" in response.request.query
    message = await handle.followup()
    assert message.content == "a cat|8|1.5|True"
    assert [(a.filename, a.data) for a in message.attachments] == [("render.png", PNG)]
    assert message.attachments[0].content_type == "image/png"
    # The first follow-up after a "thinking" defer becomes the original response.
    assert message.id == handle.original_message_id
    assert not message.loading
    assert not message.ephemeral
    assert fake.messages(GENERAL_CHANNEL_ID) == [message]

    upload = next(r for r in handle.requests if r.files)
    assert upload.method == "POST"
    assert upload.route == f"/webhooks/{fake.application_id}/{handle.token}"
    assert upload.auth is None
    assert [(f.field, f.filename, f.data) for f in upload.files] == [
        ("files[0]", "render.png", PNG)
    ]

    async with aiohttp.ClientSession() as session, session.get(message.attachments[0].url) as r:
        assert await r.read() == PNG


async def test_ephemeral_reply_is_flagged(env: Env) -> None:
    handle = await env.fake.slash_command(DEFAULT_GUILD_ID, THREAD_ID, BOB_ID, "secret")
    response = await handle.response()
    assert response.type == CallbackType.CHANNEL_MESSAGE
    assert response.ephemeral
    assert response.data["flags"] & EPHEMERAL
    message = await handle.original()
    assert message.ephemeral
    assert message.content == "only you (guild)"
    assert message.channel_id == THREAD_ID
    assert env.fake.interaction_responses(handle.id) == [response]


async def test_button_on_a_message_from_a_previous_run_reaches_the_persistent_view(
    env: Env,
) -> None:
    fake, probe = env.fake, env.probe
    seeded = fake.seed_message(
        GENERAL_CHANNEL_ID, "Control panel", components=Panel(probe).to_components()
    )
    handle = await fake.click_button(seeded, "panel:go", ALICE_ID)
    await asyncio.wait_for(probe.clicked.wait(), 5)
    assert probe.clicked_by == [ALICE_ID]
    response = await handle.response()
    assert response.type == CallbackType.UPDATE_MESSAGE
    assert fake.message(seeded.id).content == "clicked"


async def test_button_on_a_fresh_panel(env: Env) -> None:
    fake, probe = env.fake, env.probe
    command = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "panel")
    panel = await command.original()
    assert panel.custom_ids == ["panel:go"]
    click = await fake.click_button(panel, "panel:go", BOB_ID)
    assert (await click.response()).type == CallbackType.UPDATE_MESSAGE
    assert probe.clicked_by == [BOB_ID]
    assert click.payload["message"]["id"] == str(panel.id)


async def test_modal_submit_reaches_the_modal(env: Env) -> None:
    fake, probe = env.fake, env.probe
    command = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "ask")
    modal = await command.modal()
    assert modal.custom_id == "ask-modal"
    assert modal.data["title"] == "Ask the bot"
    submit = await fake.submit_modal("ask-modal", {"question": "why?"}, ALICE_ID)
    await asyncio.wait_for(probe.modal_submitted.wait(), 5)
    assert probe.modal_values == {"question": "why?"}
    reply = await submit.original()
    assert reply.content == "asked: why?"
    assert reply.ephemeral


async def test_bot_channel_message_uses_the_bot_token(env: Env) -> None:
    fake, bot = env.fake, env.bot
    channel = bot.get_channel(NSFW_CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("hello", file=discord.File(io.BytesIO(PNG), filename="x.png"))
    request = fake.requests_to("POST", rf"/channels/{NSFW_CHANNEL_ID}/messages")[0]
    assert request.auth == "bot"
    assert request.json["content"] == "hello"
    stored = fake.message(sent.id)
    assert stored.content == "hello"
    assert stored.attachments[0].data == PNG
    assert sent.attachments[0].size == len(PNG)
    assert await sent.attachments[0].read() == PNG

    fetched = await channel.fetch_message(sent.id)
    assert fetched.content == "hello"
    await fetched.edit(content="edited")
    assert stored.content == "edited"
    await fetched.delete()
    assert fake.messages(NSFW_CHANNEL_ID) == []


@pytest.mark.parametrize(
    ("status", "error_type"), [(401, discord.HTTPException), (404, discord.NotFound)]
)
async def test_expired_token_fails_and_the_bot_falls_back(
    env: Env, status: int, error_type: type[discord.HTTPException]
) -> None:
    fake, probe = env.fake, env.probe
    fake.expired_token_status = status
    handle = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "slow")
    assert (await handle.response()).type == CallbackType.DEFERRED_CHANNEL_MESSAGE
    handle.expire()
    probe.release.set()
    await asyncio.wait_for(probe.late_done.wait(), 5)

    error = probe.late_error
    assert isinstance(error, error_type)
    assert error.status == status
    assert error.code == 50027
    assert error.text == "Invalid Webhook Token"
    fallback = await fake.wait_for_message(
        lambda m: m.content == "late result (fallback)", channel_id=GENERAL_CHANNEL_ID
    )
    assert fallback.interaction_id is None
    assert fake.requests_to("POST", rf"/channels/{GENERAL_CHANNEL_ID}/messages")[0].auth == "bot"


@pytest.mark.parametrize("env", [{"ack_deadline": 0.2}], indirect=True)
async def test_a_late_initial_response_is_an_unknown_interaction(env: Env) -> None:
    fake, probe = env.fake, env.probe
    handle = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "dawdle")
    await asyncio.sleep(0.3)
    probe.release.set()
    await asyncio.wait_for(probe.late_done.wait(), 5)
    assert isinstance(probe.late_error, discord.NotFound)
    assert probe.late_error.code == 10062
    assert handle.callback is None


@pytest.mark.parametrize("env", [{"heartbeat_interval": 0.3}], indirect=True)
async def test_heartbeats_are_answered(env: Env) -> None:
    fake = env.fake
    start = len(fake.heartbeats)
    await asyncio.sleep(1.5)
    beats = fake.heartbeats[start:]
    assert len(beats) > 1
    assert all(b.acked for b in beats)
    gaps = [b - a for a, b in zip(fake.heartbeat_times, fake.heartbeat_times[1:], strict=False)]
    assert max(gaps) < 1.0
    acks = [f for f in fake.gateway_log if f.direction == "sent" and f.op == 11]
    assert len(acks) == len(fake.heartbeats)
    assert env.bot.latency < 1.0


async def test_subcommand_and_message_context_menu(env: Env) -> None:
    fake = env.fake
    handle = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "style", {"name": "sketch"}, "set"
    )
    assert handle.payload["data"]["options"] == [
        {"name": "set", "type": 1, "options": [{"name": "name", "type": 3, "value": "sketch"}]}
    ]
    assert (await handle.original()).content == "style=sketch"
    with pytest.raises(ValueError, match="not a choice"):
        await fake.slash_command(
            DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "style", {"name": "oil"}, "set"
        )

    target = fake.seed_message(GENERAL_CHANNEL_ID, "an image", author=ALICE_ID)
    menu = await fake.message_context_menu("Upscale", target, BOB_ID)
    assert (await menu.original()).content == f"upscale {target.id}"


async def test_threads_inherit_nsfw_and_dms_work(env: Env) -> None:
    fake = env.fake
    in_thread = await fake.slash_command(DEFAULT_GUILD_ID, NSFW_THREAD_ID, ALICE_ID, "where")
    assert in_thread.payload["channel"]["parent_id"] == str(NSFW_CHANNEL_ID)
    assert (await in_thread.original()).content == "nsfw=True"
    general = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "where")
    assert (await general.original()).content == "nsfw=False"

    dm = await fake.slash_command(None, None, ALICE_ID, "secret")
    assert "member" not in dm.payload
    assert dm.payload["user"]["id"] == str(ALICE_ID)
    message = await dm.original()
    assert message.content == "only you (dm)"
    assert message.channel_id == fake.dm_channel(ALICE_ID).id


async def test_dropped_connection_resumes_and_replays_missed_events(env: Env) -> None:
    fake = env.fake
    session = fake.session_id
    await fake.drop_connection()
    # Dispatched while the bot is away: kept and replayed on RESUME.
    handle = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "secret")
    await fake.wait_for(lambda: fake.resumes, what="a RESUME")
    assert fake.resumes[0]["session_id"] == session
    assert len(fake.identifies) == 1
    assert (await handle.original()).content == "only you (guild)"
    # Sent only on the new connection, by the replay.
    frames = [f for f in fake.gateway_log if f.event == "INTERACTION_CREATE"]
    assert [f.connection for f in frames] == [2]
    resumed = next(f for f in fake.gateway_log if f.event == "RESUMED")
    assert frames[0].payload["s"] < resumed.payload["s"]
    await fake.wait_connected()


async def test_rate_limits_are_retried(env: Env) -> None:
    fake, bot = env.fake, env.bot
    fake.rate_limit_next("POST", r"/channels/\d+/messages", retry_after=0.05)
    channel = bot.get_channel(GENERAL_CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    await channel.send("after a 429")
    statuses = [r.status for r in fake.requests_to("POST", r"/channels/\d+/messages")]
    assert statuses == [429, 200]


async def test_unknown_routes_are_recorded(env: Env) -> None:
    fake, bot = env.fake, env.bot
    with pytest.raises(discord.NotFound):
        await bot.http.request(Route("GET", "/guilds/{guild_id}/bans", guild_id=DEFAULT_GUILD_ID))
    assert [r.route for r in fake.unknown_requests] == [f"/guilds/{DEFAULT_GUILD_ID}/bans"]
    with pytest.raises(AssertionError, match="unknown route"):
        fake.assert_healthy()
    fake.unknown_requests.clear()


async def test_file_reply_edit_and_follow_up_delete(env: Env) -> None:
    fake = env.fake
    handle = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "preview")
    response = await handle.response()
    assert response.type == CallbackType.CHANNEL_MESSAGE
    assert [(f.filename, f.data) for f in response.files] == [("step1.png", b"one")]
    extra = await handle.followup()
    await fake.wait_for(lambda: extra.deleted, what="the follow-up deleted")
    assert extra.ephemeral
    original = handle.original_message
    assert original is not None
    assert original.content == "step 2"
    assert [(a.filename, a.data) for a in original.attachments] == [("step2.png", b"two")]
    assert len(original.edits) == 1
    assert fake.messages(GENERAL_CHANNEL_ID) == [original]
    routes = [(r.method, r.route.replace(handle.token, "TOKEN")) for r in handle.requests]
    app = fake.application_id
    assert routes == [
        ("POST", f"/interactions/{handle.id}/TOKEN/callback"),
        ("PATCH", f"/webhooks/{app}/TOKEN/messages/@original"),
        ("POST", f"/webhooks/{app}/TOKEN"),
        ("DELETE", f"/webhooks/{app}/TOKEN/messages/{extra.id}"),
    ]


@pytest.mark.parametrize("env", [{"attachment_size_limit": 1024}], indirect=True)
async def test_uploads_over_the_interaction_limit_are_rejected(env: Env) -> None:
    fake, probe = env.fake, env.probe
    handle = await fake.slash_command(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "render", {"prompt": "big"}
    )
    assert handle.payload["attachment_size_limit"] == 1024
    await fake.wait_for(lambda: probe.errors, what="the command to fail")
    error = probe.errors.pop()
    assert isinstance(error, app_commands.CommandInvokeError)
    assert isinstance(error.original, discord.HTTPException)
    assert (error.original.status, error.original.code) == (413, 40005)
    assert (await handle.original()).loading


async def test_dispatch_user_messages_and_session_invalidation(env: Env) -> None:
    fake, bot = env.fake, env.bot
    waiter = asyncio.create_task(bot.wait_for("message", timeout=5))
    await asyncio.sleep(0)
    sent = await fake.send_user_message(GENERAL_CHANNEL_ID, ALICE_ID, "hi bot")
    received = await waiter
    assert received.id == sent.id
    assert received.author.id == ALICE_ID

    await fake.send_reconnect()
    await fake.wait_for(lambda: fake.resumes, what="a RESUME after op 7")
    await fake.invalidate_session()
    await fake.wait_for(lambda: len(fake.identifies) == 2, what="a new IDENTIFY")
    await fake.wait_connected()
    handle = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "secret")
    assert (await handle.original()).content == "only you (guild)"


async def test_autocomplete_and_user_context_menu(env: Env) -> None:
    fake = env.fake
    handle = await fake.autocomplete(
        DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "model", {"name": "anim"}, "name"
    )
    response = await handle.response()
    assert response.type == CallbackType.AUTOCOMPLETE_RESULT
    assert [c["value"] for c in response.data["choices"]] == [
        "animagine-xl-3.1",
        "animagine-xl-4.0",
    ]
    menu = await fake.user_context_menu("Avatar", BOB_ID, DEFAULT_GUILD_ID, THREAD_ID, ALICE_ID)
    assert (await menu.original()).content == f"avatar of {BOB_ID}"


# ---- faults on purpose ---------------------------------------------------------------------


def _bot_headers(fake: FakeDiscord) -> dict[str, str]:
    return {"Authorization": f"Bot {fake.token}"}


async def _get_me(session: aiohttp.ClientSession, fake: FakeDiscord) -> tuple[int, str, str]:
    async with session.get(f"{fake.rest_base}/users/@me", headers=_bot_headers(fake)) as r:
        return r.status, r.headers["Content-Type"], await r.text()


async def test_an_outage_fails_every_matching_request_for_its_period() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        fake.fail_for("GET", r"/users/@me", 0.4)
        fake.fail_for("*", r"/channels/\d+/messages", 0.4, status=500, body={"code": 7})
        for _ in range(3):
            assert (await _get_me(session, fake))[:2] == (503, "application/json")
        async with session.get(f"{fake.rest_base}/gateway") as other:  # another route
            assert other.status == 200
        await asyncio.sleep(0.45)
        status, content_type, body = await _get_me(session, fake)
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body)["id"] == str(fake.bot_user.id)
    statuses = [r.status for r in fake.requests_to("GET", "/users/@me")]
    assert statuses == [503, 503, 503, 200]
    assert fake.requests_to("GET", "/users/@me")[0].response == {
        "message": "injected 503",
        "code": 0,
    }


async def test_html_answers_as_a_proxy_sends_them_with_any_status() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        fake.fail_next("GET", r"/users/@me", status=502, html=True)
        fake.fail_next("GET", r"/users/@me", status=200, html=True)
        fake.fail_next("GET", r"/users/@me", status=503, html=True, body="<p>down</p>")
        fake.fail_for("GET", r"/gateway", 5, status=502, html=True)

        status, content_type, body = await _get_me(session, fake)
        assert (status, content_type) == (502, "text/html; charset=UTF-8")
        assert "<title>502 Bad Gateway</title>" in body
        assert "cloudflare" in body
        status, content_type, body = await _get_me(session, fake)
        assert (status, content_type) == (200, "text/html; charset=UTF-8")
        assert "Just a moment..." in body
        assert (await _get_me(session, fake))[::2] == (503, "<p>down</p>")
        async with session.get(f"{fake.rest_base}/gateway") as outage:
            assert outage.status == 502
            assert "502 Bad Gateway" in await outage.text()
        assert (await _get_me(session, fake))[0] == 200
        fake.recover()
        async with session.get(f"{fake.rest_base}/gateway") as recovered:
            assert recovered.status == 200


async def test_discord_py_reads_an_html_answer_as_text(env: Env) -> None:
    fake, bot = env.fake, env.bot
    fake.fail_next("GET", r"/users/@me", status=200, html=True)
    data = await bot.http.request(Route("GET", "/users/@me"))
    assert isinstance(data, str)
    assert data.startswith("<!DOCTYPE html>")
    fake.fail_next("GET", r"/users/@me", status=503, html=True)
    with pytest.raises(discord.DiscordServerError) as raised:
        await bot.http.request(Route("GET", "/users/@me"))
    assert raised.value.status == 503
    assert "503 Service Unavailable" in raised.value.text


async def test_a_held_request_blocks_nothing_else_and_is_answered_on_recover() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        fake.hang_next("GET", r"/users/@me")
        hung = asyncio.create_task(_get_me(session, fake))
        held = await fake.wait_for(lambda: fake.held_requests, what="the request held")
        assert held[0].route == "/users/@me"
        # Other requests (the same route included) are served meanwhile.
        assert (await _get_me(session, fake))[0] == 200
        async with session.get(f"{fake.rest_base}/gateway") as other:
            assert other.status == 200
        await asyncio.sleep(0.2)
        assert not hung.done()
        fake.recover()
        status, _, body = await asyncio.wait_for(hung, 2)
        assert status == 200
        assert json.loads(body)["username"] == fake.bot_user.username
        assert fake.held_requests == []
    assert [r.status for r in fake.requests_to("GET", "/users/@me")] == [200, 200]


async def test_a_hang_for_a_period_outlasts_a_client_timeout_then_ends() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        fake.hang_for("POST", r"/channels/\d+/messages", 0.6)
        url = f"{fake.rest_base}/channels/{GENERAL_CHANNEL_ID}/messages"
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            async with session.post(
                url,
                json={"content": "lost"},
                headers=_bot_headers(fake),
                timeout=aiohttp.ClientTimeout(sock_read=0.2),
            ):
                pass
        assert asyncio.get_running_loop().time() - started < 0.5
        # The client left while the request was held: the route never ran.
        gone = await fake.wait_for(
            lambda: fake.requests_to("POST", r"/channels/\d+/messages"), 2, "the abandoned post"
        )
        assert gone[0].status == 0
        assert fake.messages(GENERAL_CHANNEL_ID) == []
        async with session.post(
            url, json={"content": "after"}, headers=_bot_headers(fake)
        ) as after:
            assert after.status == 200
        assert [m.content for m in fake.messages(GENERAL_CHANNEL_ID)] == ["after"]


async def test_a_held_request_is_answered_when_its_period_ends() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        fake.hang_for("GET", r"/users/@me", 0.3)
        started = asyncio.get_running_loop().time()
        assert (await _get_me(session, fake))[0] == 200
        assert asyncio.get_running_loop().time() - started >= 0.25


async def test_rate_limits_name_their_bucket_or_say_they_are_global() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        fake.rate_limit_next("GET", r"/users/@me", retry_after=1.5)
        fake.rate_limit_next("GET", r"/users/@me", retry_after=0.2, is_global=True)
        async with session.get(f"{fake.rest_base}/users/@me", headers=_bot_headers(fake)) as r:
            route_limit = (r.status, dict(r.headers), await r.json())
        async with session.get(f"{fake.rest_base}/users/@me", headers=_bot_headers(fake)) as r:
            global_limit = (r.status, dict(r.headers), await r.json())
    status, headers, body = route_limit
    assert status == 429
    assert body == {"message": "You are being rate limited.", "retry_after": 1.5, "global": False}
    assert headers["Retry-After"] == "2"
    assert headers["X-RateLimit-Scope"] == "user"
    assert len(headers["X-RateLimit-Bucket"]) == 32
    assert headers["X-RateLimit-Remaining"] == "0"
    assert float(headers["X-RateLimit-Reset-After"]) == 1.5
    assert "Via" in headers
    status, headers, body = global_limit
    assert (status, body["global"]) == (429, True)
    assert headers["X-RateLimit-Scope"] == "global"
    assert headers["X-RateLimit-Global"] == "true"
    assert "X-RateLimit-Bucket" not in headers


async def test_a_rate_limit_for_a_period_is_honoured_by_discord_py(env: Env) -> None:
    fake, bot = env.fake, env.bot
    fake.rate_limit_for("POST", r"/channels/\d+/messages", 0.25, retry_after=0.1)
    channel = bot.get_channel(GENERAL_CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    await channel.send("after the limit")
    statuses = [r.status for r in fake.requests_to("POST", r"/channels/\d+/messages")]
    assert statuses[-1] == 200
    assert 2 <= statuses.count(429) <= 4
    assert [m.content for m in fake.messages(GENERAL_CHANNEL_ID)] == ["after the limit"]


async def test_recover_ends_outages_and_rate_limits_at_once(env: Env) -> None:
    fake, bot = env.fake, env.bot
    fake.fail_for("POST", r"/channels/\d+/messages", 60, status=503)
    fake.rate_limit_for("GET", r"/channels/\d+", 60, retry_after=0.05)
    channel = bot.get_channel(GENERAL_CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.DiscordServerError):
        await channel.send("during the outage")
    fake.recover()
    await channel.send("recovered")
    assert (await bot.fetch_channel(GENERAL_CHANNEL_ID)).id == GENERAL_CHANNEL_ID
    assert [m.content for m in fake.messages(GENERAL_CHANNEL_ID)] == ["recovered"]


async def test_an_invalidated_session_identifies_afresh_and_gets_its_guilds_again(
    env: Env,
) -> None:
    fake, bot = env.fake, env.bot
    first_session = fake.session_id
    await fake.invalidate_session()
    await fake.wait_for(lambda: len(fake.identifies) == 2, what="a new IDENTIFY")

    def guild_back() -> bool:
        guild = bot.get_guild(DEFAULT_GUILD_ID)
        return (
            guild is not None
            and not guild.unavailable
            and guild.get_channel(NSFW_CHANNEL_ID) is not None
        )

    await fake.wait_for(guild_back, 5, "the guild again")
    assert fake.session_id != first_session
    assert fake.resumes == []
    connections = {f.connection for f in fake.gateway_log if f.event == "READY"}
    assert len(connections) == 2
    second = max(connections)
    creates = [f for f in fake.gateway_log if f.event == "GUILD_CREATE" and f.connection == second]
    assert [f.payload["d"]["id"] for f in creates] == [str(DEFAULT_GUILD_ID)]
    await fake.wait_connected()
    handle = await fake.slash_command(DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, BOB_ID, "secret")
    assert (await handle.original()).content == "only you (guild)"


async def test_a_resumable_invalid_session_resumes(env: Env) -> None:
    fake = env.fake
    session = fake.session_id
    await fake.invalidate_session(resumable=True)
    await fake.wait_for(lambda: fake.resumes, what="a RESUME")
    assert fake.resumes[0]["session_id"] == session
    assert len(fake.identifies) == 1


async def test_posts_and_uploads_can_be_counted(env: Env) -> None:
    fake, bot = env.fake, env.bot
    channel = bot.get_channel(GENERAL_CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    for content in ("job #1", "job #2", "job #1"):
        await channel.send(content, file=discord.File(io.BytesIO(PNG), filename="x.png"))
    await channel.send("job #3", file=discord.File(io.BytesIO(b"other"), filename="y.png"))
    by_job = fake.count_posts(lambda m: m.content, channel_id=GENERAL_CHANNEL_ID)
    assert by_job == {"job #1": 2, "job #2": 1, "job #3": 1}
    assert fake.count_posts(lambda m: m.channel_id) == {GENERAL_CHANNEL_ID: 4}
    assert sorted(fake.upload_counts().values()) == [1, 3]
    assert fake.upload_counts(channel_id=NSFW_CHANNEL_ID) == {}


async def test_a_gateway_outage_refuses_connections_then_the_client_resumes(env: Env) -> None:
    fake = env.fake
    session = fake.session_id
    fake.gateway_down_for(0.5)
    await fake.drop_connection()
    await fake.wait_for(lambda: fake.refused_gateway_connections, 5, "a refused connection")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(fake.gateway_url)
    assert refused.value.status == 502
    await fake.wait_for(lambda: fake.resumes, 10, "a RESUME after the outage")
    assert fake.resumes[0]["session_id"] == session
    await fake.wait_connected()


async def test_the_bots_guilds_member_and_roles_as_the_rest_api_shows_them() -> None:
    from tests.e2e.fake_discord import (
        BOT_INVITE_PERMISSIONS,
        DEFAULT_INSTALL_PARAMS,
        FakeGuild,
        Permission,
    )

    other = FakeGuild(
        900_000_000_000_000_500,
        "Other Server",
        everyone_permissions=Permission.VIEW_CHANNEL,
        bot_permissions=Permission.SEND_MESSAGES,
    )
    async with FakeDiscord(guilds=[other], install_params=None) as fake:
        headers = {"Authorization": f"Bot {fake.token}"}
        bot_id = fake.bot_user.id
        async with aiohttp.ClientSession(headers=headers) as http:
            http_base = fake.rest_base
            async with http.get(f"{http_base}/users/@me/guilds") as response:
                (listed,) = await response.json()
            assert listed["name"] == "Other Server"
            assert int(listed["permissions"]) == Permission.VIEW_CHANNEL | Permission.SEND_MESSAGES
            assert listed["owner"] is False
            async with http.get(f"{http_base}/guilds/{other.id}/members/{bot_id}") as response:
                member = await response.json()
            async with http.get(f"{http_base}/guilds/{other.id}/roles") as response:
                roles = {r["id"]: r for r in await response.json()}
            (held,) = member["roles"]
            assert roles[held]["managed"] is True
            assert int(roles[held]["permissions"]) == Permission.SEND_MESSAGES
            assert int(roles[str(other.id)]["permissions"]) == Permission.VIEW_CHANNEL
            async with http.get(f"{http_base}/guilds/{other.id}/members/1") as response:
                assert (response.status, (await response.json())["code"]) == (404, 10007)
            async with http.get(f"{http_base}/guilds/1/roles") as response:
                assert response.status == 403
            fake.guild_list_permissions = False
            async with http.get(f"{http_base}/users/@me/guilds", params={"limit": "1"}) as response:
                assert "permissions" not in (await response.json())[0]
            async with http.get(f"{http_base}/oauth2/applications/@me") as response:
                assert "install_params" not in await response.json()
        async with (
            aiohttp.ClientSession() as anonymous,
            anonymous.get(f"{fake.rest_base}/users/@me/guilds") as response,
        ):
            assert response.status == 401
    assert int(DEFAULT_INSTALL_PARAMS["permissions"]) == BOT_INVITE_PERMISSIONS


async def test_the_application_reports_its_install_link() -> None:
    from tests.e2e.fake_discord import DEFAULT_INSTALL_PARAMS

    async with FakeDiscord() as fake:
        headers = {"Authorization": f"Bot {fake.token}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.get(f"{fake.rest_base}/oauth2/applications/@me") as response,
        ):
            app = await response.json()
    assert app["install_params"] == DEFAULT_INSTALL_PARAMS
