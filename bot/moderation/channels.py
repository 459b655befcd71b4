"""Channels: where a prompt runs and an image is posted, without Discord.

A channel is age-restricted when Discord flags it ``nsfw``; a thread follows its parent; a
direct message is never age-restricted and is served only when ``moderation.dm_allowed``
is on (:func:`channel_context`). The adapter passes plain booleans and ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ChannelKind(StrEnum):
    PLAIN = "plain"
    AGE_RESTRICTED = "age-restricted"
    DM = "dm"


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """Where a request was made, as the policy needs it."""

    age_restricted: bool
    is_dm: bool = False
    is_thread: bool = False

    @property
    def kind(self) -> ChannelKind:
        if self.is_dm:
            return ChannelKind.DM
        return ChannelKind.AGE_RESTRICTED if self.age_restricted else ChannelKind.PLAIN

    @classmethod
    def of_kind(cls, kind: str | ChannelKind) -> ChannelContext:
        """``plain``, ``age-restricted`` or ``dm`` (what ``policy check --channel`` takes)."""
        try:
            named = ChannelKind(kind)
        except ValueError:
            choices = ", ".join(k.value for k in ChannelKind)
            raise ValueError(f"unknown channel kind {kind!r}: choose one of {choices}") from None
        return channel_context(named is ChannelKind.AGE_RESTRICTED, is_dm=named is ChannelKind.DM)


def channel_context(
    nsfw_flag: bool, parent_nsfw: bool | None = None, *, is_dm: bool = False
) -> ChannelContext:
    """The context of a channel from Discord's flags.

    ``nsfw_flag`` is the channel's own ``nsfw``; for a thread pass its parent's flag as
    ``parent_nsfw`` (a thread follows its parent, whatever its own flag says). A direct
    message is never age-restricted.
    """
    if is_dm:
        return ChannelContext(age_restricted=False, is_dm=True)
    if parent_nsfw is not None:
        return ChannelContext(age_restricted=parent_nsfw, is_thread=True)
    return ChannelContext(age_restricted=nsfw_flag)
