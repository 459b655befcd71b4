"""Live previews: the job's message shows the image as it forms, checked like results."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from PIL import Image

from bot.engine import Engine
from bot.moderation.classifier import Tagger
from tests.conftest import tiny_settings
from tests.e2e.conftest import BotEnv, SettingsFactory, is_result, result_of, start_bot
from tests.e2e.fake_discord import DEFAULT_GUILD_ID, FakeDiscord, RecordedRequest
from tests.support.tiny_sdxl import save_tiny_taesd
from tests.support.tiny_tagger import save_tiny_tagger

INTERVAL = 0.3  # the tests' progress interval (the bot's default is 2 s)


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_taesd(tmp_path_factory.mktemp("taesd"))


@pytest.fixture(scope="module")
def preview_engine(tiny_model_dir: Path, taesd_dir: Path) -> Engine:
    engine = Engine.load(
        tiny_settings(
            tiny_model_dir,
            ANIMAGINE_PREVIEWS__SOURCE=str(taesd_dir),
        ),
        previews=True,
    )
    assert engine.previewer is not None
    engine.previewer.max_share = 1e9  # a shared CI CPU: never off by itself here
    return engine


def progress_edits(fake: FakeDiscord, token: str) -> list[RecordedRequest]:
    return [
        r
        for r in fake.requests_to("PATCH", rf"/webhooks/\d+/{token}/messages/.+")
        if r.status == 200 and "step" in (r.json or {}).get("content", "")
    ]


PreviewBot = Callable[[str], AbstractAsyncContextManager[BotEnv]]


@pytest.fixture
def preview_bot(
    make_settings: SettingsFactory, preview_engine: Engine, taesd_dir: Path, tmp_path: Path
) -> PreviewBot:
    """Starts the bot with previews on (every 0.2 s, progress every :data:`INTERVAL`) and a
    tagger that rates every image ``rating``; yields it with its fake Discord."""

    @asynccontextmanager
    async def start(rating: str) -> AsyncIterator[BotEnv]:
        settings = make_settings(
            ANIMAGINE_PREVIEWS__SOURCE=str(taesd_dir), ANIMAGINE_PREVIEWS__INTERVAL_S="0.2"
        )
        classifier = Tagger.load(str(save_tiny_tagger(tmp_path / "tagger", scores={rating: 0.9})))
        async with (
            FakeDiscord() as fake,
            start_bot(
                fake,
                settings,
                preview_engine,
                progress_interval=INTERVAL,
                classifier=classifier,
            ) as bot,
        ):
            yield BotEnv(fake, bot)

    return start


async def test_a_long_render_shows_checked_previews_and_a_progress_bar(
    preview_bot: PreviewBot,
) -> None:
    async with preview_bot("general") as env:
        fake, bot = env.fake, env.bot
        handle = await env.imagine("1girl", steps=150)
        final = await result_of(handle, within=60)
        assert is_result(final)
        edits = progress_edits(fake, handle.token)
        with_preview = [r for r in edits if r.files]
        assert with_preview, "a render of seconds shows at least one preview"
        upload = with_preview[0].files[0]
        assert upload.filename == "preview.jpg"
        with Image.open(io.BytesIO(upload.data)) as image:
            assert image.format == "JPEG"
            assert max(image.size) <= 384
        assert "%" in with_preview[0].json["content"]
        assert "▰" in edits[-1].json["content"]
        assert " left" in edits[0].json["content"]
        assert (
            bot.service.worker.renderer.preview_check_seconds
        )  # each preview went through the check
        # The result replaced the preview: only the result's PNG is on the message.
        assert [a.filename.endswith(".png") for a in final.attachments] == [True]


async def test_a_preview_the_image_check_flags_is_not_shown_in_a_plain_channel(
    preview_bot: PreviewBot,
) -> None:
    async with preview_bot("explicit") as env:
        fake, bot = env.fake, env.bot
        handle = await env.imagine("1girl", steps=150)
        await result_of(handle, within=60)
        edits = progress_edits(fake, handle.token)
        assert len(edits) >= 2, "the text progress still flows"
        assert all(r.files == [] for r in edits)
        assert len(bot.service.worker.renderer.preview_check_seconds) >= 1  # they were checked


async def test_a_server_that_turned_previews_off_gets_none(preview_bot: PreviewBot) -> None:
    async with preview_bot("general") as env:
        fake, bot = env.fake, env.bot
        await bot.service.admin.set_defaults(DEFAULT_GUILD_ID, {"previews": False})
        handle = await env.imagine("1girl", steps=150)
        await result_of(handle, within=60)
        edits = progress_edits(fake, handle.token)
        assert len(edits) >= 2
        assert all(r.files == [] for r in edits)
        assert bot.service.worker.renderer.preview_check_seconds == []
