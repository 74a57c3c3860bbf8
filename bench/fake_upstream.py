"""A small OpenAI-shaped HTTP server for the upstream tests and the gateway benchmark,
whose behaviour the caller sets: it answers well (at once: no model behind it), or
refuses, stalls, cuts a stream midway, sends malformed JSON, answers with an integer
error code or leaves out ``[DONE]``.

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

MODES = ("ok", "drop", "stall", "cut", "malformed", "error_int_code", "no_done", "status_500")


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

    def start(self) -> "FaultServer":
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
            return self._json(writer, 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})
        if mode == "status_500":
            return self._json(writer, 500, {"error": {"message": "the upstream broke", "type": "server_error"}})
        if mode == "error_int_code":
            return self._json(writer, 400, {"object": "error", "message": "This model's maximum context length is 2048 tokens.",
                                            "type": "BadRequestError", "param": None, "code": 400})
        if mode == "malformed":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{\"id\": 1,")
            return
        if path.endswith("/embeddings"):
            return self._json(writer, 200, {"object": "list", "model": body["model"],
                                            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                                            "usage": {"prompt_tokens": 3, "total_tokens": 3}})
        chat = path.endswith("/chat/completions")
        if not (body or {}).get("stream"):
            choice = {"index": 0, "finish_reason": "stop", "logprobs": None}
            choice |= {"message": {"role": "assistant", "content": f"hello from {self.name}"}} if chat else {"text": f"hello from {self.name}"}
            return self._json(writer, 200, {"id": "x-1", "object": "chat.completion" if chat else "text_completion",
                                            "created": int(time.time()), "model": body["model"], "choices": [choice],
                                            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
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
                usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
                writer.write(_event({"id": "x-1", "object": obj, "created": 1, "model": body["model"],
                                     "choices": [], "usage": usage}))
            if mode != "no_done":
                writer.write(_chunk(b"data: [DONE]\n\n"))
            writer.write(_chunk(b""))  # the end of the chunked body
            await writer.drain()
        finally:
            self.open_streams -= 1

    @staticmethod
    def _json(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
        raw = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 500: "Internal Server Error"}[status]
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + raw)


def _chunk(data: bytes) -> bytes:
    """One piece of a chunked HTTP body (empty: the end of the body)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: dict) -> bytes:
    return _chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")
