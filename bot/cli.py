"""The command line: ``python -m bot`` and the ``animagine-bot`` console script.

Exit status 0 on success, 2 for bad options or configuration (with a one-line reason on
stderr), 1 when the work itself fails (model cannot load, engine error, a broken image).

``generate --dry-run`` prints the final prompts (``--json``: one JSON object) only when a
real run would go ahead; a prompt that is too long, has emphasis weights out of range or
cannot be built prints nothing on stdout, one line on stderr, and exits 2. Stdout never
holds JSON from a run that exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging
from bot.request import (
    ASPECTS,
    SAMPLERS,
    GenerationRequest,
    HiresOptions,
    RequestError,
    find_aspect,
    validate_request,
)

log = logging.getLogger("bot")

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad options: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


_DEFAULT_SCALE: Any = object()  # a bare --hires: the configured scale


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="animagine-bot", description="Animagine XL 3.1 for Discord")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="render images from the command line")
    gen.add_argument("prompt", help="Danbooru tags, e.g. '1girl, solo, long hair'")
    gen.add_argument("--negative", default="", help="negative prompt (after the preset's)")
    gen.add_argument("--width", type=_positive_int)
    gen.add_argument("--height", type=_positive_int)
    gen.add_argument(
        "--aspect", help=f"one of the card's resolutions: {', '.join(a.size for a in ASPECTS)}"
    )
    gen.add_argument("--steps", type=_positive_int)
    gen.add_argument("--cfg", type=_float)
    gen.add_argument("--sampler", help=f"one of: {', '.join(SAMPLERS)}")
    gen.add_argument("--seed", type=_positive_int)
    gen.add_argument("--count", type=_positive_int, default=1)
    gen.add_argument(
        "--hires",
        nargs="?",
        type=_float,
        const=_DEFAULT_SCALE,
        metavar="SCALE",
        help="hires pass; optional latent upscale factor 1.0-1.5 (default from config)",
    )
    gen.add_argument("--quality", help="quality preset, e.g. 'Standard v3.1' or None")
    gen.add_argument("--style", help="style preset, e.g. Anime")
    gen.add_argument("--rating", help="safe, sensitive, nsfw or explicit")
    gen.add_argument("--year", help="newest, recent, mid, early or oldest")
    gen.add_argument("--wildcards", metavar="DIR", help="folder of NAME.txt wildcard files")
    gen.add_argument(
        "--model", metavar="SOURCE", help="hub repo id, diffusers folder or .safetensors"
    )
    gen.add_argument("--variant", help='weight variant such as "fp16"')
    gen.add_argument("--vae", metavar="SOURCE", help="separate VAE: hub repo id or folder")
    gen.add_argument("--device", choices=["cpu", "cuda"])
    gen.add_argument("--out", metavar="PATH", help="output file (.png) or folder")
    gen.add_argument(
        "--dry-run", action="store_true", help="show the final prompts, render nothing"
    )
    gen.add_argument("--json", action="store_true", help="with --dry-run: print JSON")
    gen.set_defaults(handler=cmd_generate)

    run = sub.add_parser("run", help="start the Discord bot (token from DISCORD_TOKEN)")
    run.set_defaults(handler=cmd_run)

    worker = sub.add_parser(
        "worker", help="render jobs from Redis on this machine (queue.backend = redis)"
    )
    worker.add_argument("--name", help="this worker's name (default: host-pid)")
    worker.add_argument(
        "--grace",
        type=_float,
        metavar="SECONDS",
        help="on SIGTERM, finish the current job within this many seconds, else hand it "
        "back to Redis (default: queue.redis_drain_grace_s)",
    )
    for command in (
        worker,
        workers := sub.add_parser("workers", help="list the workers that reported lately"),
    ):
        # `python -m bot worker --config worker.toml` reads as well as `--config` first.
        command.add_argument(
            "--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML settings file"
        )
    worker.set_defaults(handler=cmd_worker)

    workers.set_defaults(handler=cmd_workers)

    db = sub.add_parser("db", help="database schema: upgrade, current")
    db_sub = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    db_sub.add_parser("upgrade", help="upgrade the database to the newest schema").set_defaults(
        handler=cmd_db_upgrade
    )
    db_sub.add_parser("current", help="show the schema revision of the database").set_defaults(
        handler=cmd_db_current
    )

    policy = sub.add_parser("policy", help="moderation policy tools")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, parser_class=_Parser)
    check = policy_sub.add_parser(
        "check",
        help="show how prompts are decided (one JSON line each)",
        description="Prompts come from the arguments, or one per line on standard input.",
    )
    check.add_argument("--channel", required=True, choices=["plain", "age-restricted"])
    check.add_argument("--rating", help="rating option as /imagine would pass it")
    check.add_argument("--negative", default="", help="the member's negative prompt")
    check.add_argument("prompts", nargs="*", metavar="PROMPT")
    check.set_defaults(handler=cmd_policy_check)

    doctor = sub.add_parser(
        "doctor",
        help="check everything the bot needs; exit 1 when something is wrong",
        description="One checklist: config, Discord token, invite scopes and permissions, "
        "commands, database, Redis and workers, model, GPU, image tagger, disk. Changes "
        "nothing.",
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.add_argument(
        "--no-load", action="store_true", help="skip loading the model (the slow part)"
    )
    doctor.set_defaults(handler=cmd_doctor)

    for command in (gen, run, check, doctor, *db_sub.choices.values()):
        # `--config` is accepted after the subcommand too (`policy check --config FILE`).
        command.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS)
    return parser


def _overrides(args: argparse.Namespace, settings: Settings) -> Settings:
    model: dict[str, Any] = {}
    if args.model:
        model["source"] = args.model
    if args.variant is not None:
        model["variant"] = args.variant
    if args.vae is not None:
        model["vae"] = args.vae
    prompts: dict[str, Any] = {}
    if args.wildcards:
        prompts["wildcards_dir"] = args.wildcards
    engine: dict[str, Any] = {}
    if args.device:
        engine["device"] = args.device
    return settings.model_copy(
        update={
            "model": settings.model.model_copy(update=model),
            "prompts": settings.prompts.model_copy(update=prompts),
            "engine": settings.engine.model_copy(update=engine),
        }
    )


def request_from_args(args: argparse.Namespace, settings: Settings) -> GenerationRequest:
    """The generation request the options describe, validated against the settings."""
    engine = settings.engine
    width, height = engine.default_width, engine.default_height
    if args.aspect:
        if args.width is not None or args.height is not None:
            raise UsageError("generate: use --aspect or --width/--height, not both")
        aspect = find_aspect(args.aspect)
        width, height = aspect.width, aspect.height
    width = args.width if args.width is not None else width
    height = args.height if args.height is not None else height
    hires = None
    if args.hires is not None:
        scale = engine.hires_scale if args.hires is _DEFAULT_SCALE else args.hires
        hires = HiresOptions(scale=scale, strength=engine.hires_strength)
    request = GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative,
        width=width,
        height=height,
        steps=args.steps if args.steps is not None else engine.default_steps,
        cfg=args.cfg if args.cfg is not None else engine.default_cfg,
        sampler=args.sampler or engine.default_sampler,
        seed=args.seed,
        count=args.count,
        hires=hires,
        quality=args.quality or settings.prompts.quality,
        style=args.style or settings.prompts.style,
        rating=args.rating,
        year=args.year,
    )
    return validate_request(request, engine)


def _output_paths(out: str | None, default_dir: str, seeds: Sequence[int]) -> list[Path]:
    """Where the images go; checked (and folders made) before any weight is loaded."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = Path(out) if out else Path(default_dir)
    if target.suffix and target.suffix.lower() != ".png" and not target.is_dir():
        raise UsageError(f"generate: --out {target}: give a .png file name or a folder")
    if target.suffix.lower() == ".png" and not target.is_dir():
        folder = target.parent
        if len(seeds) == 1:
            paths = [target]
        else:
            paths = [target.with_name(f"{target.stem}-{i + 1}.png") for i in range(len(seeds))]
    else:
        folder = target
        paths = [target / f"{stamp}-{seed}.png" for seed in seeds]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"generate: --out {target}: cannot create {folder} ({exc.strerror})"
        ) from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"generate: --out {target}: {folder} is not writable")
    return paths


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from bot.engine.loading import load_tokenizer
    from bot.planning import plan_render, prompt_summary
    from bot.prompts.emphasis import check_weights
    from bot.prompts.encoder import check_chunks, check_lengths

    settings = _overrides(args, settings)
    request = request_from_args(args, settings).with_seed()
    if args.json and not args.dry_run:
        raise UsageError("generate: --json only goes with --dry-run")
    job = plan_render(request, settings).job
    # Wildcards may have expanded to weights the engine refuses: say so before any work.
    check_weights(job.prompt, "prompt")
    check_weights(job.negative_prompt, "negative prompt")
    if args.dry_run:
        summary = prompt_summary(job, settings)
        # Checked before printing: a dry run shows what a real run would render, or fails
        # with one line and exit status 2, never both.
        check_chunks(summary["chunks"], settings.prompts.max_chunks, "prompt")
        check_chunks(summary["negative_chunks"], settings.prompts.max_chunks, "negative prompt")
        if args.json:
            print(json.dumps(summary, ensure_ascii=False))
        else:
            for key, value in summary.items():
                print(f"{key}: {value}")
        return 0
    paths = _output_paths(args.out, settings.output.dir, job.seeds)
    # The prompt's length is checked with the tokenizer alone, before the weights load.
    check_lengths(
        load_tokenizer(settings.model),
        job.prompt,
        job.negative_prompt,
        settings.prompts.max_chunks,
    )
    return _render_and_save(job, paths, settings)


def _render_and_save(job: Any, paths: list[Path], settings: Settings) -> int:
    from tqdm import tqdm

    from bot.engine import Engine, Progress
    from bot.images import encode_png

    engine = Engine.load(settings)
    total = job.steps + job.hires_steps
    with tqdm(total=total, desc="rendering", unit="step", file=sys.stderr) as bar:

        def progress(p: Progress) -> None:
            bar.n = p.step
            bar.set_postfix_str(p.phase)
            bar.refresh()

        result = engine.render(job, on_progress=progress)
    for path, rendered in zip(paths, result.images, strict=True):
        path.write_bytes(encode_png(rendered.image, rendered.infotext))
        print(f"{path}\tseed={rendered.seed}")
    return 0


def cmd_policy_check(args: argparse.Namespace, settings: Settings) -> int:
    from bot.moderation import policy_check_lines
    from bot.planning import wildcard_source
    from bot.prompts import resolve_rating

    if args.rating:
        resolve_rating(args.rating)  # an unknown rating is a usage error, as in generate
    prompts = args.prompts or sys.stdin.read().splitlines()
    lines = policy_check_lines(
        prompts,
        args.channel,
        settings.moderation,
        negative=args.negative,
        rating=args.rating,
        quality=settings.prompts.quality,
        style=settings.prompts.style,
        wildcards=wildcard_source(settings),
    )
    for line in lines:
        print(json.dumps(line, ensure_ascii=False))
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.discord_app.runner import run
    from bot.queue.redis_backend import RedisUnavailable

    try:
        if settings.queue.backend == "redis":
            _check_redis(settings)  # before the model loads: a wrong URL fails in a second
        return run(settings)
    except RedisUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _check_redis(settings: Settings) -> None:
    """Reach ``queue.redis_url`` once (raises :class:`RedisUnavailable`, one line)."""
    import asyncio

    from bot.queue.redis_backend import connect

    async def ping() -> None:
        client = await connect(settings.queue.redis_url)
        await client.aclose()

    asyncio.run(ping())


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """A remote worker: no Discord token, no database; model, engine and Redis only."""
    import asyncio

    from bot.queue.protocol import IncompatibleVersion
    from bot.queue.redis_backend import RedisUnavailable
    from bot.queue.remote_worker import serve

    try:
        if args.grace is not None and args.grace < 0:
            raise UsageError(f"--grace: expected a number >= 0, got {args.grace}")
        return asyncio.run(serve(settings, name=args.name, grace=args.grace))
    except RedisUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except IncompatibleVersion as exc:
        print(f"error: this worker is refused: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Each worker that sent a heartbeat lately: host, GPU, model, state, jobs, last beat."""
    import asyncio
    import time

    from bot.queue.redis_backend import (
        Keys,
        RedisUnavailable,
        connect,
        describe_workers,
        list_workers,
    )

    async def listing() -> list[str]:
        redis = await connect(settings.queue.redis_url)
        try:
            beats = await list_workers(redis, Keys(settings.queue.redis_prefix))
        finally:
            await redis.aclose()
        return describe_workers(beats, time.time())

    try:
        lines = asyncio.run(listing())
    except RedisUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for line in lines or ["no workers reported in the last few seconds"]:
        print(line)
    return 0


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from bot.storage import prepare_database

    db = prepare_database(settings)
    try:
        version = _version(settings)
        print(f"{db.location}: at {version.current} (newest)")
    finally:
        db.close()
    return 0


def _version(settings: Settings) -> Any:
    from bot.storage import check_schema_version

    return check_schema_version(
        settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms
    )


def cmd_db_current(args: argparse.Namespace, settings: Settings) -> int:
    version = _version(settings)
    state = "up to date" if version.up_to_date else f"behind: newest is {version.head}"
    print(f"{version.current or 'empty (no schema)'} ({state})")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """The checklist; it loads the configuration itself, so that a configuration that does
    not load is still reported in the chosen format (exit status 2)."""
    from bot.doctor import doctor

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Building the command tree makes a discord.py client, which warns that voice is off.
    logging.getLogger("discord.client").setLevel(logging.ERROR)
    if not args.no_load:  # only loading needs them (and importing them takes seconds)
        _quiet_libraries()
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()  # the checklist is the output
        transformers_logging.disable_progress_bar()
    status, text = doctor(args.config, as_json=args.json, load=not args.no_load)
    print(text)
    return status


def _quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    from bot.engine import DeviceError, EngineError, ModelLoadError
    from bot.prompts import PromptError
    from bot.storage import DatabaseError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "doctor":
            return cmd_doctor(args)
        settings = load_settings(args.config)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(settings.logging)
    _quiet_libraries()
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except (UsageError, RequestError, PromptError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelLoadError, DeviceError, EngineError, DatabaseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
