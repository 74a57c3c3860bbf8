"""A small OpenAI-shaped HTTP server for the upstream tests and the gateway benchmark,
whose behaviour the caller sets: it answers well (at once: no model behind it), or
refuses, stalls, cuts a stream midway, sends malformed JSON, answers with an integer
error code or leaves out ``[DONE]``; or, as a hostile or broken server would, answers
an HTML error page, echoes the ``Authorization`` header it got, redirects, sends a
``huge`` answer (``huge_bytes``, streamed, never held), a malformed stream event,
drips a stream one byte at a time, or reports an enormous ``usage``.

It speaks just enough HTTP/1.1 (one request per connection, ``Connection: close``) on
its own event loop in a thread, and records every request it received, so a test can
see what the gateway sent upstream (the model name, ``stream_options``, the key).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

MODES = ("ok", "drop", "stall", "cut", "malformed", "error_int_code", "no_done", "status_500", "html_error",
         "echo_auth", "redirect", "huge", "bad_event", "drip", "big_usage")
HTML_ERROR_PAGE = (b"<html><body><h1>502 Bad Gateway</h1><pre>db_password=hunter2-internal\n"
                   b"upstream: http://10.1.2.3:5432</pre></body></html>")
BIG_USAGE = 1_000_000


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FaultServer:
    """``mode`` may be changed while it runs; ``models`` is what /v1/models lists."""

    mode: str = "ok"
    name: str = "fault"
    models: tuple[str, ...] = ("upstream-name",)
    huge_bytes: int = 200 * 1024 * 1024  # mode "huge": the size of the answer (or of one stream line)
    drip_seconds: float = 0.5  # mode "drip": one byte this often after the first event
    own_max_tokens: int | None = None  # tokens "generated" without max_tokens (None: the fixed answers)
    received: list[Received] = field(default_factory=list)
    open_streams: int = 0
    max_open_streams: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fault-{self.name}", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(5)

    def completions(self) -> list[Received]:
        return [r for r in self.received if r.method == "POST"]

    # ------------------------------------------------------------------ the server
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, sock=sock))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "drop":  # accepted by the kernel, dropped before any answer
                writer.transport.abort()
                return
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            body = json.loads(raw) if raw else None
            self.received.append(Received(method, path, headers, body))
            await self._answer(method, path, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _answer(self, method: str, path: str, body: Any, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        if mode == "stall":
            await asyncio.sleep(3600)
        if path.endswith("/models") and method == "GET":
            if mode == "status_500":
                return self._json(writer, 500, {"error": {"message": "down", "type": "server_error"}})
            models = [{"id": m, "object": "model"} for m in self.models]
            return self._json(writer, 200, {"object": "list", "data": models})
        if mode == "status_500":
            return self._json(writer, 500, {"error": {"message": "the upstream broke", "type": "server_error"}})
        if mode == "error_int_code":
            return self._json(writer, 400, {"object": "error",
                                            "message": "This model's maximum context length is 2048 tokens.",
                                            "type": "BadRequestError", "param": None, "code": 400})
        if mode == "malformed":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n"
                         b"Connection: close\r\n\r\n{\"id\": 1,")
            return
        if mode == "html_error":
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: "
                         + str(len(HTML_ERROR_PAGE)).encode() + b"\r\nConnection: close\r\n\r\n" + HTML_ERROR_PAGE)
            return
        if mode == "echo_auth":
            sent = self.received[-1].headers.get("authorization", "")
            return self._json(writer, 400, {"error": {"message": f"Invalid credentials: Authorization: {sent}",
                                                      "type": "invalid_request_error", "code": "bad_key"}})
        if mode == "redirect":
            writer.write(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        if mode == "huge" and not (body or {}).get("stream"):
            return await self._huge_json(writer)
        if path.endswith("/embeddings"):
            return self._json(writer, 200, {"object": "list", "model": body["model"],
                                            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                                            "usage": {"prompt_tokens": 3, "total_tokens": 3}})
        chat = path.endswith("/chat/completions")
        if not (body or {}).get("stream"):
            choice = {"index": 0, "finish_reason": "stop", "logprobs": None}
            text = f"hello from {self.name}"
            choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            completion = self._completion_tokens(body, 3)
            return self._json(writer, 200, {"id": "x-1", "object": "chat.completion" if chat else "text_completion",
                                            "created": int(time.time()), "model": body["model"], "choices": [choice],
                                            "usage": {"prompt_tokens": 5, "completion_tokens": completion,
                                                      "total_tokens": 5 + completion}})
        await self._stream(writer, body, chat, mode)

    async def _stream(self, writer: asyncio.StreamWriter, body: Any, chat: bool, mode: str) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")
        obj = "chat.completion.chunk" if chat else "text_completion"
        words = ["hello", " from", f" {self.name}", "!", " more", " words", " here"]
        usage_on = (body.get("stream_options") or {}).get("include_usage")
        self.open_streams += 1
        self.max_open_streams = max(self.max_open_streams, self.open_streams)
        try:
            for i, word in enumerate(words[: int(body.get("max_tokens") or len(words))]):
                if mode == "cut" and i == 2:
                    writer.transport.abort()  # no end of the body: a broken connection
                    return
                if i == 1 and mode in ("huge", "bad_event", "drip"):
                    await self._misbehave_mid_stream(writer, mode)
                    return
                choice = {"index": 0, "finish_reason": None, "logprobs": None}
                choice |= {"delta": {"content": word}} if chat else {"text": word}
                chunk = {"id": "x-1", "object": obj, "created": 1, "model": body["model"], "choices": [choice]}
                if usage_on:
                    chunk["usage"] = None
                writer.write(_event(chunk))
                await writer.drain()
                await asyncio.sleep(0.02)
            last = {"index": 0, "finish_reason": "length", "logprobs": None} | ({"delta": {}} if chat else {"text": ""})
            writer.write(_event({"id": "x-1", "object": obj, "created": 1, "model": body["model"], "choices": [last]}))
            if usage_on:
                completion = self._completion_tokens(body, 7)
                usage = {"prompt_tokens": 5, "completion_tokens": completion, "total_tokens": 5 + completion}
                writer.write(_event({"id": "x-1", "object": obj, "created": 1, "model": body["model"],
                                     "choices": [], "usage": usage}))
            if mode != "no_done":
                writer.write(_chunk(b"data: [DONE]\n\n"))
            writer.write(_chunk(b""))  # the end of the chunked body
            await writer.drain()
        finally:
            self.open_streams -= 1

    def _completion_tokens(self, body: dict, fixed: int) -> int:
        """What the usage reports: a million in mode "big_usage"; with ``own_max_tokens``
        the request's max_tokens (else that many, as a server generating to its own limit)."""
        if self.mode == "big_usage":
            return BIG_USAGE
        if self.own_max_tokens is not None:
            return int(body.get("max_tokens") or body.get("max_completion_tokens") or self.own_max_tokens)
        return fixed

    async def _huge_json(self, writer: asyncio.StreamWriter) -> None:
        """A JSON answer of ``huge_bytes``, written a megabyte at a time (never held here)."""
        head, tail = b'{"id": "x-1", "object": "text_completion", "choices": [{"index": 0, "text": "', b'"}]}'
        size = self.huge_bytes
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n"
                     "Connection: close\r\n\r\n".encode() + head)
        await self._write_filler(writer, size - len(head) - len(tail))
        writer.write(tail)
        await writer.drain()

    @staticmethod
    async def _write_filler(writer: asyncio.StreamWriter, count: int, *, chunked: bool = False) -> None:
        block = b"a" * (1024 * 1024)
        while count > 0:
            piece = block[:count]
            writer.write(_chunk(piece) if chunked else piece)
            await writer.drain()
            count -= len(piece)

    async def _misbehave_mid_stream(self, writer: asyncio.StreamWriter, mode: str) -> None:
        """After the first event: one huge line, a malformed event, or a one-byte drip."""
        if mode == "huge":
            writer.write(_chunk(b'data: {"choices": [{"index": 0, "text": "'))
            await self._write_filler(writer, self.huge_bytes, chunked=True)
            writer.write(_chunk(b'"}]}\n\n'))
        elif mode == "bad_event":
            writer.write(_chunk(b'data: {"choices": 5}\n\n'))
        else:
            for byte in b'data: {"choices": [{"index": 0, "delta": {"content": "slow"}}]}\n\n' * 100:
                writer.write(_chunk(bytes([byte])))
                await writer.drain()
                await asyncio.sleep(self.drip_seconds)
        writer.write(_chunk(b"data: [DONE]\n\n") + _chunk(b""))
        await writer.drain()

    @staticmethod
    def _json(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
        raw = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 500: "Internal Server Error"}[status]
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + raw)


def _chunk(data: bytes) -> bytes:
    """One piece of a chunked HTTP body (empty: the end of the body)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: dict) -> bytes:
    return _chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")
