"""Exceptions the engine raises; the web layer maps each to one OpenAI error."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelUnavailable(EngineError):
    """The model cannot be loaded (offline Hub repo, missing file, bad weights). HTTP 503."""


class EngineOverloaded(EngineError):
    """The admission queue is full. HTTP 429 with Retry-After."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidInput(EngineError):
    """The input cannot be run by this model (no chat template, ids out of vocabulary,
    too long for the window). HTTP 400; ``param`` names the request field, ``code`` is
    an OpenAI error code or None."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def context_length_exceeded(window: int, prompt_len: int, max_tokens: int, *, param: str = "prompt",
                            why: str = "") -> InvalidInput:
    """The one wording of the context-length rule (OpenAI's), wherever it is checked;
    ``why`` says what set a window smaller than the model's own."""
    return InvalidInput(
        f"This model's maximum context length is {window} tokens{why}. However, you requested "
        f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the completion). "
        "Please reduce the length of the prompt or the completion.",
        param=param,
        code="context_length_exceeded",
    )


def check_vocabulary(ids, limit: int, *, param: str = "prompt") -> None:
    """The one out-of-vocabulary check: every id within ``0..limit-1``, else an
    InvalidInput naming ``param`` and the first id that is not."""
    for position, token in enumerate(ids):
        if not 0 <= int(token) < limit:
            raise InvalidInput(
                f"token id {int(token)} (at position {position}) is outside this model's vocabulary (0..{limit - 1})",
                param=param,
            )
