"""Bodies over MAX_REQUEST_BYTES are refused before they are read, over a real socket.

Each case talks raw HTTP/1.1 to a uvicorn server, so nothing in a client library reads
or buffers on our behalf: the server has to answer while the client is still "sending".
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.live_server import LiveServer

pytestmark = pytest.mark.e2e

CAP = 64 * 1024
ANSWER_WITHIN = 30  # seconds; the old server never answered (it waited for the body)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("bodylimit"), MAX_REQUEST_BYTES=str(CAP)).start()
    yield live
    live.stop()


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_WITHIN)
    sock.settimeout(ANSWER_WITHIN)
    return sock


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _head(path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: big-body-1\r\n{extra}\r\n"
    ).encode()


def test_a_declared_length_over_the_cap_is_refused_before_the_body(server):
    with _connect(server) as sock:
        # 200 MB announced, 1 KB sent: the answer must come without the rest.
        sock.sendall(_head("/v1/chat/completions", "Content-Length: 200000000\r\n") + b"{" + b" " * 1023)
        status, headers, body = _read_answer(sock)
    assert status == 413
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large" and str(CAP) in error["message"]
    log = server.log_tail(20000)
    assert "request_id=big-body-1" in log and "status=413" in log


def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_cap(server):
    with _connect(server) as sock:
        sock.sendall(_head("/v1/completions", "Transfer-Encoding: chunked\r\n"))
        piece = b"x" * 16384
        for _ in range(CAP // len(piece) + 2):  # past the cap, and never the final chunk
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        status, headers, body = _read_answer(sock)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_a_malformed_length_is_a_400(server):
    with _connect(server) as sock:
        sock.sendall(_head("/v1/completions", "Content-Length: lots\r\n"))
        try:
            status, _, _ = _read_answer(sock)
        except (AssertionError, ConnectionError):
            return  # uvicorn's HTTP parser may refuse it first: also not read
    assert status == 400


def test_a_body_under_the_cap_is_served(server):
    body = json.dumps({"model": "no-such-model", "prompt": "x" * (CAP // 2)}).encode()
    with _connect(server) as sock:
        sock.sendall(_head("/v1/completions", f"Content-Length: {len(body)}\r\n") + body)
        status, _, answer = _read_answer(sock)
    assert status == 404 and json.loads(answer)["error"]["code"] == "model_not_found"
