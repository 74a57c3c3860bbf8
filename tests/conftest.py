"""Fixtures shared by the whole suite."""

from __future__ import annotations

import copy

import pytest
from django.conf import settings as django_settings

from core import usage
from inference.threads import release_openmp_workers
from ledger.recorder import record

# In the test process the usage ledger writes each request when it ends, in the test's
# own transaction (its batching thread would write outside it; live servers batch), so
# it is a consumer that queries the database.
django_settings.GPT3DEV["USAGE_FLUSH_SECONDS"] = 0
usage.subscribe(record, database=True)


@pytest.fixture(autouse=True)
def no_openmp_workers_left_on_the_main_thread():
    """A test that runs parallel torch work on the main thread (a reference forward, a
    tensor check) leaves OpenMP workers there, and while they exist every decode step of
    the engines' worker threads in this process runs about a third slower (see
    inference/threads.py). A server's event loop thread runs no such work; give them
    back after each test so that the rest of the suite runs as a server would."""
    yield
    release_openmp_workers()


@pytest.fixture
def gpt3dev_settings(settings):
    """A private copy of settings.GPT3DEV that a test may change freely."""
    settings.GPT3DEV = copy.deepcopy(django_settings.GPT3DEV)
    return settings.GPT3DEV


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "a-long-password-1")


@pytest.fixture
def admin_client_logged_in(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture(scope="session")
def live_server_url(tmp_path_factory):
    """One real uvicorn server with the default models, shared by the e2e tests."""
    from tests.live_server import LiveServer

    server = LiveServer(tmp_path_factory.mktemp("live"), MAX_N="8").start()
    yield server.base_url
    server.stop()


@pytest.fixture(scope="session")
def openai_client(live_server_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{live_server_url}/v1", api_key="not-needed", max_retries=0, timeout=120)
