"""Command groups: imagine (``/imagine``), info (``/queue``, ``/limits``, ``/help``,
"Generation info") and admin (``/settings``)."""
