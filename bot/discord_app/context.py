"""Who asks and where the answer goes, read from an interaction (never from a custom id)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import discord

from bot.limits import Requester
from bot.moderation import ChannelContext, channel_context
from bot.service import Destination

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

DEFAULT_FILESIZE_LIMIT: Final = 10 * 1024 * 1024
"""Discord's upload limit per attachment since January 2025, for sends without an interaction."""

_AGE_RESTRICTABLE = (
    discord.TextChannel,
    discord.VoiceChannel,
    discord.StageChannel,
    discord.ForumChannel,
)


def bot_of(interaction: discord.Interaction[Any]) -> AnimagineBot:
    from bot.discord_app.client import AnimagineBot

    client = interaction.client
    if not isinstance(client, AnimagineBot):
        raise TypeError("this interaction does not belong to an AnimagineBot")
    return client


def requester(interaction: discord.Interaction[Any]) -> Requester:
    user = interaction.user
    roles: frozenset[int] = frozenset()
    if isinstance(user, discord.Member):
        roles = frozenset(role.id for role in user.roles if role.id != user.guild.id)
    return Requester(
        user_id=user.id,
        guild_id=interaction.guild_id,
        role_ids=roles,
        is_admin=interaction.guild_id is not None and interaction.permissions.administrator,
    )


def channel_of(interaction: discord.Interaction[Any]) -> ChannelContext:
    """Where an interaction happened, as the moderation policy sees it.

    A channel is age-restricted when Discord flags it ``nsfw``; a thread follows its parent
    (a thread whose parent the bot cannot see counts as not age-restricted); anything
    outside a server (a DM, a group DM) is a direct message, never age-restricted.
    """
    channel = interaction.channel
    if interaction.guild_id is None:
        return channel_context(False, is_dm=True)
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        return channel_context(False, parent is not None and parent.is_nsfw())
    return channel_context(isinstance(channel, _AGE_RESTRICTABLE) and channel.is_nsfw())


def age_restricted(interaction: discord.Interaction[Any]) -> bool:
    """Whether the channel is age-restricted (threads follow their parent; DMs never are)."""
    return channel_of(interaction).age_restricted


def destination(interaction: discord.Interaction[Any]) -> Destination:
    where = channel_of(interaction)
    return Destination(
        channel_id=interaction.channel_id,
        interaction_token=interaction.token,
        interaction_expires_at=interaction.expires_at,
        age_restricted=where.age_restricted,
        is_dm=where.is_dm,
        is_thread=where.is_thread,
        locale=str(interaction.locale),
    )


def is_moderator(interaction: discord.Interaction[Any]) -> bool:
    """Manage Messages in this channel (always false in DMs)."""
    return interaction.guild_id is not None and interaction.permissions.manage_messages


def is_server_admin(interaction: discord.Interaction[Any]) -> bool:
    """Manage Server, as computed by Discord for this member (false in DMs)."""
    return interaction.guild_id is not None and interaction.permissions.manage_guild


async def reply(
    interaction: discord.Interaction[Any],
    content: str = "",
    *,
    embed: discord.Embed | None = None,
    ephemeral: bool = True,
) -> None:
    """Answer, whether or not the interaction was already acknowledged."""
    extra: dict[str, Any] = {} if embed is None else {"embed": embed}
    if interaction.response.is_done():
        await interaction.followup.send(content, ephemeral=ephemeral, **extra)
    else:
        await interaction.response.send_message(content, ephemeral=ephemeral, **extra)
