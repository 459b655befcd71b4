"""``python -m bot``: the same CLI as the ``animagine-bot`` console script."""

import sys

from bot.cli import main

if __name__ == "__main__":
    sys.exit(main())
