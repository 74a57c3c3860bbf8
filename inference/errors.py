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
