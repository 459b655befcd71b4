"""The Discord layer: the only package that imports discord.

Modules, one concern each:

* :mod:`~bot.discord_app.client`: ``AnimagineBot`` (service, delivery, cogs, command sync);
* :mod:`~bot.discord_app.cogs`: ``/imagine`` (imagine), ``/queue``, ``/limits``, ``/help``
  and "Generation info" (info), ``/settings`` with ``/settings moderation`` (admin),
  ``/mod ban|unban|purge`` and "Who made this?" (mod);
* :mod:`~bot.discord_app.moderation`: which job a bot message shows, ban durations, the
  server's moderation log channel;
* :mod:`~bot.discord_app.components`: persistent buttons and the Edit modal;
* :mod:`~bot.discord_app.submit`: acknowledge, check, queue, reply (commands and buttons);
* :mod:`~bot.discord_app.delivery`: the ``JobEvents`` that post progress and results;
* :mod:`~bot.discord_app.formatting`: every text and embed;
* :mod:`~bot.discord_app.requests`, :mod:`~bot.discord_app.choices`,
  :mod:`~bot.discord_app.context`: options to requests, option choices, who and where;
* :mod:`~bot.discord_app.runner`: ``run(settings)`` for ``python -m bot run``.
"""
