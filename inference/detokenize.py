"""Incremental, UTF-8-safe detokenisation and stop-string holdback.

:class:`TokenTable` maps every token id to the exact bytes it contributes to the text
(byte-level BPE via the GPT-2 byte alphabet, SentencePiece ``▁``/``<0xNN>`` pieces, or
``decode([id])`` as a last resort). Working in bytes means a character split across
tokens (emoji, CJK) is simply held by an incremental UTF-8 decoder until complete.

:class:`StopMatcher` releases text as soon as it cannot be the start of a stop string,
holds back only the longest suffix that is a prefix of some stop string, and cuts the
output exactly before the first stop string, even when the stop spans several tokens.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte <-> printable-unicode table used by byte-level BPE tokenizers."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return False
    return "ByteLevel" in repr(decoder) or type(decoder).__name__ == "ByteLevel"


class TokenTable:
    """Token id -> bytes (and OpenAI display text) for one tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        size = len(tokenizer)
        self.special_ids = frozenset(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        self._bytes: list[bytes] = []
        byte_level = _is_byte_level(tokenizer)
        inverse = {c: b for b, c in _bytes_to_unicode().items()}
        added = set(getattr(tokenizer, "get_added_vocab", lambda: {})().values())
        for tid, piece in enumerate(pieces):
            if piece is None:
                self._bytes.append(b"")
                continue
            if tid in added:
                # Added tokens are stored verbatim, not in the byte alphabet.
                self._bytes.append(piece.encode("utf-8"))
            elif byte_level and all(ch in inverse for ch in piece):
                self._bytes.append(bytes(inverse[ch] for ch in piece))
            elif (m := _BYTE_PIECE.match(piece)) is not None:
                self._bytes.append(bytes([int(m.group(1), 16)]))
            elif "▁" in piece:
                self._bytes.append(piece.replace("▁", " ").encode("utf-8"))
            elif byte_level:
                self._bytes.append(piece.encode("utf-8"))
            else:
                self._bytes.append(tokenizer.decode([tid]).encode("utf-8"))

    def __len__(self) -> int:
        return len(self._bytes)

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id] if 0 <= token_id < len(self._bytes) else b""

    def output_bytes(self, token_id: int) -> bytes:
        """Bytes a token adds to *generated text*: special tokens (EOS, chat markers) add none."""
        return b"" if token_id in self.special_ids else self.token_bytes(token_id)

    def token_text(self, token_id: int) -> str:
        """OpenAI display text: the token's string, or ``bytes:\\xNN..`` when the token is
        an incomplete UTF-8 fragment."""
        raw = self.token_bytes(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


class IncrementalDetokenizer:
    """Feeds token bytes through an incremental UTF-8 decoder: incomplete characters
    wait for the next token; invalid bytes become U+FFFD only once proven invalid."""

    def __init__(self, table: TokenTable, *, skip_special_tokens: bool = True) -> None:
        self._bytes = table.output_bytes if skip_special_tokens else table.token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        return self._decoder.decode(self._bytes(token_id), final=False)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Stop-string detection with minimal holdback."""

    def __init__(self, stops: tuple[str, ...] | list[str], *, include_stop: bool = False) -> None:
        self._stops = tuple(s for s in stops if s)
        self._include = include_stop
        self._pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add decoded text; return (text safe to release, whether a stop string was hit).
        After a hit, everything after the stop string is discarded, and the stop string
        itself too unless ``include_stop``."""
        if not self._stops:
            return text, False
        buf = self._pending + text
        hit, end = -1, -1
        for stop in self._stops:
            pos = buf.find(stop)
            if pos != -1 and (hit == -1 or pos < hit or (pos == hit and pos + len(stop) > end)):
                hit, end = pos, pos + len(stop)
        if hit != -1:
            self._pending = ""
            return buf[: end if self._include else hit], True
        hold = 0
        for stop in self._stops:
            # Longest suffix of buf that is a proper prefix of this stop string.
            for k in range(min(len(stop) - 1, len(buf)), hold, -1):
                if buf.endswith(stop[:k]):
                    hold = k
                    break
        self._pending = buf[len(buf) - hold:] if hold else ""
        return (buf[: len(buf) - hold] if hold else buf), False

    def flush(self) -> str:
        """End of sequence without a stop: the held text was not a stop after all."""
        out, self._pending = self._pending, ""
        return out
