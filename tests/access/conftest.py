"""Fixtures for the access tests: keys made the way the admin and the command make them."""

from __future__ import annotations

import pytest

from access.keys import create_api_key


@pytest.fixture
def make_key(db):
    def make(name: str = "alice", **fields) -> tuple[object, str]:
        return create_api_key(name=name, **fields)

    return make


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}
