"""The model as the bot sees it when jobs render on remote workers (``queue.backend =
"redis"``): its CLIP tokenizer, and nothing else.

The bot still checks each prompt's length when it is accepted (a job must not wait in the
queue to be refused by a worker) and reads prompts in the model's pieces for moderation
(:mod:`bot.moderation.tokens`). Both need the tokenizer files only, so the bot's machine
needs neither a GPU nor the model's weights; the workers load those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import Settings


class LengthCheck:
    """The part of the prompt encoder the bot uses: the length check and the tokenizers."""

    def __init__(self, tokenizer: Any, max_chunks: int) -> None:
        self.tokenizers = [tokenizer]  # both SDXL tokenizers share one vocabulary
        self.max_chunks = max_chunks

    def check(self, prompt: str, negative_prompt: str) -> None:
        """Raise :class:`~bot.prompts.PromptTooLong` now, as the engine would."""
        from bot.prompts.encoder import check_lengths

        check_lengths(self.tokenizers[0], prompt, negative_prompt, self.max_chunks)


class PromptFront:
    """Stands in for :class:`~bot.engine.Engine` in the bot when the engines are remote."""

    remote = True  # renders nothing itself

    def __init__(self, tokenizer: Any, max_chunks: int) -> None:
        self.encoder = LengthCheck(tokenizer, max_chunks)

    @classmethod
    def load(cls, settings: Settings) -> PromptFront:
        """The model's tokenizer files (a local folder, or the hub's cache; never its
        weights). Raises :class:`~bot.errors.ModelLoadError` as :meth:`Engine.load` would."""
        from bot.engine.loading import load_tokenizer

        return cls(load_tokenizer(settings.model), settings.prompts.max_chunks)
