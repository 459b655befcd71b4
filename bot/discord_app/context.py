"""Who asks and where the answer goes, read from an interaction (never from a custom id)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import discord

from bot.limits import Requester
from bot.service import Destination

if TYPE_CHECKING:
    from bot.discord_app.client import AnimagineBot

DEFAULT_FILESIZE_LIMIT: Final = 10 * 1024 * 1024
"""Discord's upload limit per attachment since January 2025, for sends without an interaction."""

_AGE_RESTRICTABLE = (
    discord.TextChannel,
    discord.Thread,
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


def age_restricted(interaction: discord.Interaction[Any]) -> bool:
    """Whether the channel is age-restricted (threads inherit it; DMs never are)."""
    channel = interaction.channel
    return isinstance(channel, _AGE_RESTRICTABLE) and channel.is_nsfw()


def destination(interaction: discord.Interaction[Any]) -> Destination:
    return Destination(
        channel_id=interaction.channel_id,
        interaction_token=interaction.token,
        interaction_expires_at=interaction.expires_at,
        age_restricted=age_restricted(interaction),
        is_dm=interaction.guild_id is None,
        is_thread=isinstance(interaction.channel, discord.Thread),
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
