"""Moderation without Discord: channel policy, prompt matching and the image classifier.

* :mod:`bot.moderation.policy`: channel contexts, per-server policies, prompt decisions
  (:func:`check_prompt`, :func:`check_built`), image verdicts (:func:`image_verdict`) and
  the ``policy check`` command's lines (:func:`policy_check_lines`);
* :mod:`bot.moderation.matching`: normalisation and term matching that see through
  evasions; :mod:`bot.moderation.lists`: the built-in term lists;
* :mod:`bot.moderation.settings`: the ``[moderation]`` settings section;
* :mod:`bot.moderation.classifier`: the WD14 tagger (numpy, Pillow, onnxruntime), not
  imported here so that the policy stays cheap to import.

Nothing here imports :mod:`bot.config`, so the settings module can import
:class:`ModerationSettings` without a cycle.
"""

from bot.moderation.matching import TermSet, normalize_text, scan, tag_key
from bot.moderation.policy import (
    Action,
    ChannelContext,
    ChannelKind,
    Decision,
    GuildOverrides,
    GuildPolicy,
    PolicySettingsError,
    PromptDecision,
    RatingScores,
    Thresholds,
    Verdict,
    channel_context,
    check_built,
    check_prompt,
    ensure_negatives,
    image_verdict,
    merge_overrides,
    policy_check_lines,
    validate_overrides,
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
    "scan",
    "tag_key",
    "validate_overrides",
]
