"""Moderation without Discord: channel policy, prompt matching and the image classifier.

* :mod:`bot.moderation.channels`: channel contexts (age-restricted, thread, DM);
* :mod:`bot.moderation.guild_policy`: a server's overrides over the bot-wide settings;
* :mod:`bot.moderation.prompt_check`: prompt decisions (:func:`check_prompt`,
  :func:`check_built`) and the ``policy check`` command's lines;
* :mod:`bot.moderation.image_check`: image verdicts (:func:`image_verdict`);
* :mod:`bot.moderation.matching`: normalisation and term matching that see through
  evasions; :mod:`bot.moderation.lists`: the built-in term lists;
* :mod:`bot.moderation.settings`: the ``[moderation]`` settings section;
* :mod:`bot.moderation.classifier`: the WD14 tagger (numpy, Pillow, onnxruntime), not
  imported here so that the policy stays cheap to import.

Nothing here imports :mod:`bot.config`, so the settings module can import
:class:`ModerationSettings` without a cycle.
"""

from bot.moderation.channels import ChannelContext, ChannelKind, channel_context
from bot.moderation.guild_policy import (
    GuildOverrides,
    GuildPolicy,
    PolicySettingsError,
    Thresholds,
    merge_overrides,
    validate_overrides,
)
from bot.moderation.image_check import (
    Action,
    RatingScores,
    Verdict,
    image_verdict,
    preview_shown,
)
from bot.moderation.matching import TermSet, normalize_text, scan, tag_key
from bot.moderation.prompt_check import (
    Decision,
    PromptDecision,
    check_built,
    check_prompt,
    ensure_negatives,
    policy_check_lines,
)
from bot.moderation.settings import ClassifierSettings, ModerationSettings, SpoilerPolicy

__all__ = [
    "Action",
    "ChannelContext",
    "ChannelKind",
    "ClassifierSettings",
    "Decision",
    "GuildOverrides",
    "GuildPolicy",
    "ModerationSettings",
    "PolicySettingsError",
    "PromptDecision",
    "RatingScores",
    "SpoilerPolicy",
    "TermSet",
    "Thresholds",
    "Verdict",
    "channel_context",
    "check_built",
    "check_prompt",
    "ensure_negatives",
    "image_verdict",
    "merge_overrides",
    "normalize_text",
    "policy_check_lines",
    "preview_shown",
    "scan",
    "tag_key",
    "validate_overrides",
]
