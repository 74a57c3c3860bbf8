"""One real server for the Responses tests, with two API keys (alice and bob) so that
scoping is tested, on a database that outlives the server (so a restart can be tested)."""

from __future__ import annotations

import os

import pytest

from tests.live_server import LiveServer

MODEL = "SmolLM2-135M-Instruct"
ALICE, BOB = "sk-test-alice-0123456789", "sk-test-bob-0123456789"


class ResponsesServer:
    """A restartable live server: the same database and settings each time."""

    def __init__(self, workdir, **env: str) -> None:
        self.workdir = workdir
        database = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'responses.sqlite3'}"
        self.env = {"API_KEYS": f"alice:{ALICE},bob:{BOB}", "DATABASE_URL": database, **env}
        self.server = LiveServer(workdir / "run0", **self.env).start()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def restart(self, *, kill: bool = False) -> None:
        if kill and self.server.process is not None:
            self.server.process.kill()
            self.server.process.wait(timeout=30)
        self.server.stop()
        run = len(list(self.workdir.glob("run*")))
        self.server = LiveServer(self.workdir / f"run{run}", **self.env).start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def responses_server(tmp_path_factory):
    server = ResponsesServer(tmp_path_factory.mktemp("responses"), MAX_CONTEXT_TOKENS="8192")
    yield server
    server.stop()


def client_for(server: ResponsesServer, key: str = ALICE):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=300)


@pytest.fixture
def alice(responses_server):
    return client_for(responses_server)
