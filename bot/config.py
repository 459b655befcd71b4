"""Typed settings: one TOML file plus environment variables for secrets and overrides.

Every key is documented with its default in ``config.example.toml``. Loading validates the
whole file at once; any unknown key, wrong type or out-of-range value raises
:class:`ConfigError` whose message names the key by its dotted path (``engine.max_steps``)
and says what was expected. Secrets are held as :class:`~pydantic.SecretStr` and never
appear in messages; a value that looks like a Discord bot token is redacted from every
error message, whatever key it was given to (:func:`redact_tokens`).

Loading goes through pydantic-settings: :class:`Settings` is a ``BaseSettings`` whose sources
are the environment layer over the TOML file (:meth:`Settings.settings_customise_sources`).
Environment overrides use ``ANIMAGINE_<SECTION>__<KEY>`` (for example
``ANIMAGINE_ENGINE__DEVICE=cpu``); values are read as TOML literals when they parse as one
(``8``, ``true``, ``[1, 2]``) and as plain strings otherwise. The Discord token comes from
``DISCORD_TOKEN`` or from the file named by ``discord.token_file``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.moderation.settings import ModerationSettings
from bot.samplers import find_sampler

ENV_PREFIX = "ANIMAGINE_"
TOKEN_ENV = "DISCORD_TOKEN"  # noqa: S105 - the variable's name, not a secret

PositiveInt = Annotated[StrictInt, Field(gt=0)]
StrictFloat = Annotated[float, Field(strict=False)]


DISCORD_TOKEN_PATTERN = re.compile(
    r"(?<![A-Za-z0-9_-])(?:mfa\.[A-Za-z0-9_-]{20,}"
    r"|[A-Za-z0-9_-]{18,}\.[A-Za-z0-9_-]{5,8}\.[A-Za-z0-9_-]{25,})(?![A-Za-z0-9_-])"
)
"""A Discord bot token: the base64 user id, a dot, a 6-character timestamp, a dot, an HMAC
of 27 characters or more (old ``mfa.`` tokens too). Lengths are kept loose on purpose."""
REDACTED = "[redacted: looks like a Discord token]"


def redact_tokens(text: str) -> str:
    """``text`` with everything that looks like a Discord token replaced by a marker."""
    return DISCORD_TOKEN_PATTERN.sub(REDACTED, text)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the problem.

    The message never holds a value that looks like a Discord token: it is redacted here,
    so that no error path (pydantic's messages, TOML errors, a value echoed for any key)
    can print one.
    """

    def __init__(self, message: str) -> None:
        super().__init__(redact_tokens(message))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelSettings(_Section):
    """Where the weights come from."""

    source: StrictStr = Field(
        "cagliostrolab/animagine-xl-3.1",
        min_length=1,
        description="Hub repo id, local diffusers folder, or single .safetensors file",
    )
    variant: StrictStr = Field("", description='Weight variant such as "fp16"; "" for none')
    revision: StrictStr = Field("", description="Hub revision (branch, tag or commit)")
    vae: StrictStr = Field("", description="Optional separate VAE: hub repo id or folder")
    single_file_config: StrictStr = Field(
        "",
        description="Local diffusers folder with configs and tokenizers for single-file loads",
    )
    cache_dir: StrictStr = Field("", description="Hugging Face cache folder; '' for default")
    offline: StrictBool = Field(False, description="Never reach the hub (HF_HUB_OFFLINE)")
    name: StrictStr = Field(
        "animagine-xl-3.1", min_length=1, description="Model name written into infotext"
    )


AttentionBackend = Literal["auto", "flash", "efficient", "cudnn", "math"]
CompileMode = Literal["default", "max-autotune"]
CompileBackend = Literal["inductor", "aot_eager", "eager"]

MIN_SIDE, MAX_SIDE = 64, 4096
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_size(text: str) -> tuple[int, int]:
    """``"832x1216"`` -> ``(832, 1216)``; sides must be multiples of 8 within 64..4096."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size such as '832x1216'")
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        if side % 8 or not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(f"{text!r}: sides must be multiples of 8 between 64 and 4096")
    return width, height


class SpeedSettings(BaseModel):
    """GPU speed-ups (mount as ``[engine.speed]``). All are no-ops on the CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    enabled: StrictBool = Field(True, description="Master switch: false keeps the plain path")
    channels_last: StrictBool = Field(
        True, description="UNet and VAE weights in channels_last memory format"
    )
    fuse_qkv: StrictBool = Field(
        True, description="Fuse the Q, K, V projections of every attention into one matmul"
    )
    compile_unet: StrictBool = Field(True, description="torch.compile the UNet at start-up")
    compile_vae: StrictBool = Field(True, description="torch.compile the VAE decoder")
    compile_mode: CompileMode = Field(
        "default",
        description="inductor mode: 'default' (measured 2.03x on an H200, ~100 s compile per "
        "size) or 'max-autotune' (tunes kernels; unmeasured here, minutes more per size)",
    )
    cuda_graphs: StrictBool = Field(
        False, description="Replay compiled graphs as CUDA graphs (mode reduce-overhead)"
    )
    inductor_flags: StrictBool = Field(
        False,
        description="diffusers' inductor flags: conv_1x1_as_mm, coordinate descent tuning, "
        "no epilogue fusion",
    )
    compile_backend: CompileBackend = Field(
        "inductor", description="torch.compile backend; only inductor is faster (others debug)"
    )
    attention: AttentionBackend = Field(
        "auto", description="SDPA backend tried first: auto, flash, efficient, cudnn, math"
    )
    cudnn_benchmark: StrictBool = Field(
        True, description="Let cuDNN pick the fastest convolution algorithm per shape"
    )
    compile_cache_dir: StrictStr = Field(
        "", description="Folder for inductor's compile caches; '' for torch's default (/tmp)"
    )
    warmup_sizes: list[StrictStr] = Field(
        default_factory=lambda: ["896x1152", "832x1216", "1024x1024"],
        description="Sizes (WxH) compiled at start-up",
    )
    warmup_batch_sizes: list[Annotated[StrictInt, Field(ge=1, le=16)]] = Field(
        default_factory=lambda: [1], description="Images per call compiled at start-up"
    )
    pad_prompt_chunks: Annotated[StrictInt, Field(ge=0, le=32)] = Field(
        2,
        description="Pad prompts to this many 75-token chunks (masked, image unchanged) so "
        "they share one compiled graph; 0 = off",
    )
    unwarmed_shapes: Literal["eager", "compile"] = Field(
        "eager",
        description="After warm-up, a shape not compiled yet runs eagerly ('eager') or is "
        "compiled on first use ('compile', may take minutes)",
    )
    apply_on_cpu: StrictBool = Field(
        False, description="Apply even on the CPU (tests and debugging only)"
    )

    @field_validator("warmup_sizes")
    @classmethod
    def _check_sizes(cls, sizes: list[str]) -> list[str]:
        for size in sizes:
            parse_size(size)
        return sizes

    @property
    def inductor_mode(self) -> str:
        """The ``torch.compile`` mode these switches mean."""
        if self.compile_mode == "max-autotune":
            return "max-autotune" if self.cuda_graphs else "max-autotune-no-cudagraphs"
        return "reduce-overhead" if self.cuda_graphs else "default"

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [parse_size(s) for s in self.warmup_sizes]


class EngineSettings(_Section):
    """Device, precision and the bounds of a request."""

    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    min_side: Annotated[StrictInt, Field(ge=64, le=4096)] = 512
    max_side: Annotated[StrictInt, Field(ge=64, le=4096)] = 2048
    max_pixels: Annotated[StrictInt, Field(ge=4096)] = 1536 * 1536
    max_steps: Annotated[StrictInt, Field(ge=1, le=150)] = 50
    max_count: Annotated[StrictInt, Field(ge=1, le=8)] = 4
    default_width: Annotated[StrictInt, Field(ge=64, le=4096)] = 896
    default_height: Annotated[StrictInt, Field(ge=64, le=4096)] = 1152
    default_steps: Annotated[StrictInt, Field(ge=1, le=150)] = 28
    default_cfg: Annotated[StrictFloat, Field(ge=1.0, le=30.0)] = 7.0
    default_sampler: StrictStr = "Euler a"
    hires_scale: Annotated[StrictFloat, Field(ge=1.0, le=1.5)] = 1.5
    hires_strength: Annotated[StrictFloat, Field(gt=0.0, le=1.0)] = 0.55
    vary_subtle_strength: Annotated[StrictFloat, Field(gt=0.0, le=1.0)] = 0.35
    vary_strong_strength: Annotated[StrictFloat, Field(gt=0.0, le=1.0)] = 0.65
    image_prompt_strength: Annotated[StrictFloat, Field(gt=0.0, le=1.0)] = 0.65
    input_max_bytes: Annotated[StrictInt, Field(ge=1024, le=64 * 1024 * 1024)] = 10 * 1024 * 1024
    input_max_pixels: Annotated[StrictInt, Field(ge=4096, le=178_956_970)] = 6144 * 6144
    input_download_timeout_s: Annotated[StrictFloat, Field(gt=0.0, le=120.0)] = 15.0
    speed: SpeedSettings = Field(default_factory=SpeedSettings)

    @field_validator("default_sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        return find_sampler(name)

    @model_validator(mode="after")
    def _check_bounds(self) -> EngineSettings:
        if self.min_side > self.max_side:
            raise ValueError("min_side must not exceed max_side")
        if self.default_steps > self.max_steps:
            raise ValueError("default_steps must not exceed max_steps")
        for side in (self.default_width, self.default_height):
            if not self.min_side <= side <= self.max_side or side % 8:
                raise ValueError(
                    "default_width and default_height must be multiples of 8 "
                    "between min_side and max_side"
                )
        return self


class PromptSettings(_Section):
    """How prompts are built and encoded."""

    quality: StrictStr = "Standard v3.1"
    style: StrictStr = "(None)"
    wildcards_dir: StrictStr = ""

    @field_validator("quality")
    @classmethod
    def _known_quality(cls, name: str) -> str:
        from bot.prompts import get_quality_preset

        return get_quality_preset(name).name

    @field_validator("style")
    @classmethod
    def _known_style(cls, name: str) -> str:
        from bot.prompts import get_style_preset

        return get_style_preset(name).name

    max_chunks: Annotated[StrictInt, Field(ge=1, le=32)] = 8


class OutputSettings(_Section):
    """Where the CLI writes images by default."""

    dir: StrictStr = "outputs"


class DatabaseSettings(_Section):
    """The bot's durable state (see ``bot.storage``).

    ``url`` is an SQLAlchemy URL: ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``
    or, for larger deployments, ``postgresql+psycopg://user@host/dbname``.
    """

    url: StrictStr = Field("sqlite:///animagine.db", min_length=1)
    busy_timeout_ms: Annotated[StrictInt, Field(ge=0, le=600_000)] = 5000
    pool_size: Annotated[StrictInt, Field(ge=1, le=64)] = Field(
        4, description="Connections (and worker threads) used for database work"
    )

    @field_validator("url")
    @classmethod
    def _parses(cls, url: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(url)
        except ArgumentError:
            raise ValueError(
                "not a database URL (e.g. sqlite:///animagine.db or postgresql+psycopg://...)"
            ) from None
        return url


class LimitsSettings(_Section):
    """Per-member and per-server rate limits, counted in images (see ``bot.limits``).

    A request costs ``count * max(1, round(base * max(1, pixels / reference_pixels) **
    size_weight * (steps / reference_steps) ** steps_weight * (hires_factor if hires else 1)))``.
    """

    class Tier(_Section):
        """One set of limits: a burst and a sustained rate, a daily quota, and a job cap."""

        burst: Annotated[StrictInt, Field(ge=1, le=10_000)] = Field(
            4, description="Images that may be started at once"
        )
        refill_seconds: Annotated[StrictFloat, Field(gt=0.0, le=86_400.0)] = Field(
            30.0, description="Then one more image every this many seconds"
        )
        daily_quota: Annotated[StrictInt, Field(ge=0)] = Field(
            100, description="Images per day (resets at reset_hour_utc); 0 for no daily quota"
        )
        max_concurrent_jobs: Annotated[StrictInt, Field(ge=1, le=10_000)] = Field(
            2, description="Jobs waiting or running at the same time"
        )

    class RoleTier(_Section):
        """Members holding ``role_id`` get the limits of ``tier``."""

        role_id: PositiveInt
        tier: StrictStr = Field(min_length=1)

    class Cost(_Section):
        """How many images a request counts as."""

        base: Annotated[StrictFloat, Field(gt=0.0, le=100.0)] = 1.0
        reference_pixels: Annotated[StrictInt, Field(ge=4096)] = 1024 * 1024
        reference_steps: Annotated[StrictInt, Field(ge=1, le=150)] = 28
        size_weight: Annotated[StrictFloat, Field(ge=0.0, le=4.0)] = 1.0
        steps_weight: Annotated[StrictFloat, Field(ge=0.0, le=4.0)] = 1.0
        hires_factor: Annotated[StrictFloat, Field(ge=1.0, le=10.0)] = 2.0

    enabled: StrictBool = Field(True, description="false: no rate limits (bans still apply)")
    reset_hour_utc: Annotated[StrictInt, Field(ge=0, le=23)] = Field(
        0, description="UTC hour at which daily quotas reset"
    )
    default_tier: StrictStr = Field("default", min_length=1)
    tiers: dict[str, LimitsSettings.Tier] = Field(
        default_factory=lambda: {"default": LimitsSettings.Tier()}
    )
    role_tiers: list[LimitsSettings.RoleTier] = Field(default_factory=list)
    exempt_role_ids: list[PositiveInt] = Field(default_factory=list)
    exempt_administrators: StrictBool = True
    server: LimitsSettings.Tier = Field(
        Tier(burst=40, refill_seconds=3.0, daily_quota=0, max_concurrent_jobs=10),
        description="Limits for a whole server (all its members together)",
    )
    cost: LimitsSettings.Cost = Cost()

    @model_validator(mode="after")
    def _check_tiers(self) -> LimitsSettings:
        known = set(self.tiers)
        for name in [self.default_tier, *(r.tier for r in self.role_tiers)]:
            if name not in known:
                raise ValueError(f"tier {name!r} is not defined in limits.tiers")
        return self


class QueueSettings(_Section):
    """The embedded fair queue and its worker."""

    class PriorityRole(_Section):
        """Members holding ``role_id`` are served in a higher priority class."""

        role_id: PositiveInt
        priority: Annotated[StrictInt, Field(ge=1, le=100)]

    max_length: Annotated[StrictInt, Field(ge=1, le=100_000)] = 100
    job_timeout_s: Annotated[StrictFloat, Field(gt=0.0, le=86_400.0)] = 600.0
    initial_step_seconds: Annotated[StrictFloat, Field(gt=0.0, le=600.0)] = 0.15
    priority_roles: list[QueueSettings.PriorityRole] = Field(default_factory=list)
    # Micro-batching: the most images one pipeline call may hold (1 = off), and how many of
    # the next jobs in fair order may be looked at for ones compatible with the next job.
    micro_batch_images: Annotated[StrictInt, Field(ge=1, le=8)] = 1
    micro_batch_window: Annotated[StrictInt, Field(ge=1, le=64)] = 4
    # Where jobs run: "embedded" (this process's engine) or "redis" (workers on other
    # machines, `python -m bot worker`, reached through Redis Streams at ``redis_url``).
    backend: Literal["embedded", "redis"] = "embedded"
    redis_url: StrictStr = "redis://127.0.0.1:6379/0"
    # Key prefix of every stream and key, so several bots can share one Redis.
    redis_prefix: Annotated[
        StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ] = "animagine"
    # Jobs handed out beyond what the live workers can start now (kept small: fair order).
    redis_prefetch: Annotated[StrictInt, Field(ge=0, le=64)] = 1
    # A job whose worker has not renewed its claim for this long goes to another worker.
    redis_claim_timeout_s: Annotated[StrictFloat, Field(ge=0.5, le=3600.0)] = 5.0
    # How often workers report; one silent for 3 intervals counts as gone.
    redis_heartbeat_s: Annotated[StrictFloat, Field(ge=0.1, le=60.0)] = 1.0
    # A job whose render was lost (its worker crashed or went silent) this many times in a
    # row fails with a refund instead of going to yet another worker.
    redis_max_attempts: Annotated[StrictInt, Field(ge=1, le=100)] = 3
    # Seconds a worker told to stop (SIGTERM) may finish its job; past them it hands the job
    # back to Redis for another worker (``python -m bot worker --grace`` overrides it).
    redis_drain_grace_s: Annotated[StrictFloat, Field(ge=0.0, le=86_400.0)] = 60.0


class DiscordSettings(_Section):
    """Connection to Discord. The token is never read from the TOML file itself."""

    token_file: StrictStr = ""
    token: SecretStr | None = Field(None, exclude=True, repr=False)
    rest_url: StrictStr = "https://discord.com/api/v10"
    gateway_url: StrictStr = "wss://gateway.discord.gg/"
    dev_guilds: list[PositiveInt] = Field(default_factory=list)
    # 1: one gateway connection (enough up to ~2,500 servers, Discord's limit per shard);
    # "auto": an auto-sharded client with the shard count Discord recommends; N: N shards.
    shards: Literal["auto"] | Annotated[StrictInt, Field(ge=1, le=4096)] = 1

    @model_validator(mode="before")
    @classmethod
    def _no_token_in_file(cls, data: Any) -> Any:
        token = data.get("token") if isinstance(data, Mapping) else None
        if token is not None and not isinstance(token, SecretStr):
            raise ValueError(
                "the token does not belong in the config file: set DISCORD_TOKEN or token_file"
            )
        return data


class DeliverySettings(_Section):
    """The outbox: finished images kept on disk until the member has them, then for a while.

    A delivery that Discord refuses for now (5xx, 429, a timeout, no connection) is tried
    again after ``retry_first_s``, doubling up to ``retry_max_s`` (with jitter, never
    sooner than Discord's ``retry-after``), for ``retry_hours``; then the member is told
    once and the images stay fetchable (``/images``) until retention removes them: after
    ``keep_days``, or oldest first when they take more than ``keep_mib``.
    """

    # Where kept images go; "" (default): an ``images`` folder beside the SQLite database
    # (``data/images`` for other databases), so the bot's state stays together.
    images_dir: StrictStr = ""
    retry_hours: Annotated[StrictFloat, Field(gt=0.0, le=24.0 * 14)] = 6.0
    retry_first_s: Annotated[StrictFloat, Field(gt=0.0, le=3600.0)] = 2.0
    retry_max_s: Annotated[StrictFloat, Field(gt=0.0, le=6.0 * 3600)] = 300.0
    keep_days: Annotated[StrictFloat, Field(gt=0.0, le=3650.0)] = 7.0
    keep_mib: Annotated[StrictInt, Field(ge=1, le=10_000_000)] = 4096
    retention_interval_s: Annotated[StrictFloat, Field(gt=0.0, le=86_400.0)] = 900.0

    @model_validator(mode="after")
    def _ordered(self) -> DeliverySettings:
        if self.retry_max_s < self.retry_first_s:
            raise ValueError("retry_max_s must not be below retry_first_s")
        return self


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text": one readable line per record; "json": one JSON object per line (for log
    # collectors) with the event, job, guild and channel ids when the record has them.
    format: Literal["text", "json"] = "text"


class MetricsSettings(_Section):
    """The operations HTTP server: Prometheus metrics, ``/healthz`` and ``/readyz``.

    Off unless ``enabled``; it listens on the loopback interface unless ``host`` says
    otherwise (``0.0.0.0`` inside a container, so probes and Prometheus can reach it).
    """

    enabled: StrictBool = False
    host: StrictStr = Field("127.0.0.1", min_length=1)
    port: Annotated[StrictInt, Field(ge=0, le=65535)] = 9464


class DescribeSettings(_Section):
    """``/describe``: the WD14 tagger's tags of an image, as an Animagine prompt.

    The tagger is ``moderation.classifier``'s. Tags are kept when their score is over the
    thresholds (general and copyright tags, character tags), at most ``max_tags`` general
    ones. An attachment is refused before decoding when it has more than ``max_bytes``,
    is not PNG, JPEG or WebP by its content, or its header says more than ``max_pixels``.
    """

    general_threshold: Annotated[StrictFloat, Field(gt=0.0, lt=1.0)] = 0.35
    character_threshold: Annotated[StrictFloat, Field(gt=0.0, lt=1.0)] = 0.85
    max_tags: Annotated[StrictInt, Field(ge=1, le=200)] = 40
    max_bytes: Annotated[StrictInt, Field(ge=1024, le=512 * 1024 * 1024)] = 20 * 1024 * 1024
    max_pixels: Annotated[StrictInt, Field(ge=4096, le=178_956_970)] = 40_000_000
    max_concurrent: Annotated[StrictInt, Field(ge=1, le=64)] = 2


class PreviewSettings(_Section):
    """Live previews: while a job renders, its message shows the image as it forms.

    Each preview is the current latents decoded by TAESD (diffusers' ``AutoencoderTiny``;
    ``source`` is a hub repo id or a local folder, loaded like the model: ``model.cache_dir``,
    ``model.offline``), at most one per job every ``interval_s`` seconds, no larger than
    ``max_side`` pixels, and passes the image check before it is shown. ``source = ""`` or
    ``enabled = false`` turns previews off for the whole bot; a server turns them off with
    its ``previews`` generation default. They also go off by themselves while more than
    ``busy_queue`` jobs wait, or once previews cost more than ``max_share`` of the render
    time (one decode every ``interval_s``, or every step when steps are slower: the GPU is
    the bottleneck).
    """

    enabled: StrictBool = True
    source: StrictStr = "madebyollin/taesdxl"
    interval_s: Annotated[StrictFloat, Field(ge=0.0, le=600.0)] = 3.0
    max_side: Annotated[StrictInt, Field(ge=64, le=1024)] = 384
    busy_queue: Annotated[StrictInt, Field(ge=0, le=100_000)] = 5
    max_share: Annotated[StrictFloat, Field(gt=0.0, le=1.0)] = 0.05

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.source)


class Settings(BaseSettings):
    """All settings of the bot.

    Built directly (``Settings(engine=...)``), it holds exactly what it is given. Through
    :func:`load_settings` its sources are, highest first: the environment layer
    (:class:`EnvLayer`), then the TOML file (:class:`TomlFile`), then the defaults.
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True, validate_default=True)

    model: ModelSettings = Field(default_factory=ModelSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    prompts: PromptSettings = Field(default_factory=PromptSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    describe: DescribeSettings = Field(default_factory=DescribeSettings)
    previews: PreviewSettings = Field(default_factory=PreviewSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        layers = _LAYERS.get()
        if layers is None:
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            EnvLayer(settings_cls, layers.environ),
        ]
        if layers.path is not None:
            sources.append(TomlFile(settings_cls, layers.path))
        return tuple(sources)


@dataclass(frozen=True)
class _Layers:
    path: Path | None
    environ: Mapping[str, str]


_LAYERS: ContextVar[_Layers | None] = ContextVar("settings_layers", default=None)


@contextmanager
def _layers(path: Path | None, environ: Mapping[str, str]) -> Iterator[None]:
    """Give :meth:`Settings.settings_customise_sources` the file and environment to read."""
    token = _LAYERS.set(_Layers(path, environ))
    try:
        yield
    finally:
        _LAYERS.reset(token)


class _Source(PydanticBaseSettingsSource):
    """A source that reads its whole layer at once (nested sections and all)."""

    data: dict[str, Any]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.data


class EnvLayer(_Source):
    """``ANIMAGINE_<SECTION>__<KEY>`` variables, values read as TOML literals."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.data = _env_overrides(environ)


class TomlFile(_Source):
    """The TOML file; raises :class:`ConfigError` when it cannot be read or parsed."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        try:
            self.data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(raw)
    return out


def _env_names(environ: Mapping[str, str]) -> dict[str, str]:
    """Dotted key -> the environment variable that set it."""
    return {
        ".".join(p.lower() for p in name[len(ENV_PREFIX) :].split("__")): name
        for name in environ
        if name.startswith(ENV_PREFIX) and "__" in name
    }


def _describe(error: Mapping[str, Any], env_names: Mapping[str, str]) -> str:
    loc = ".".join(str(p) for p in error["loc"] if p not in ("function-after", "function-before"))
    if loc in env_names:
        loc = f"{loc} (from {env_names[loc]})"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    msg = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    hide = isinstance(given, dict | SecretStr) or loc.endswith("token")
    shown = "" if hide else f" (got {given!r})"
    return f"{loc or '(top level)'}: {msg}{shown}"


def load_settings(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read ``path`` (optional), apply environment overrides, and validate everything."""
    env = os.environ if environ is None else environ
    file = None if path is None else Path(path)
    where = "settings" if path is None else str(path)
    try:
        with _layers(file, env):
            settings = Settings()
    except ValidationError as exc:
        names = _env_names(env)
        problems = "; ".join(_describe(e, names) for e in exc.errors())
        raise ConfigError(f"{where}: {problems}") from None
    token = _read_token(settings.discord, env, where)
    if token is not None:
        discord = settings.discord.model_copy(update={"token": token})
        settings = settings.model_copy(update={"discord": discord})
    return settings


def _read_token(discord: DiscordSettings, env: Mapping[str, str], where: str) -> SecretStr | None:
    value = env.get(TOKEN_ENV, "").strip()
    if value:
        return SecretStr(value)
    if discord.token_file:
        try:
            text = Path(discord.token_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            # The path is not echoed: people sometimes paste the token itself there.
            raise ConfigError(
                f"{where}: discord.token_file: cannot read the file "
                f"({exc.strerror or type(exc).__name__})"
            ) from None
        if not text:
            raise ConfigError(f"{where}: discord.token_file: the file is empty")
        return SecretStr(text)
    return None
