"""Management commands of the registry."""

from __future__ import annotations

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_model_sizes_measures_packaged_models_and_explains_hub_rows(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    call_command("model_sizes")
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "MB" in lines["SmolLM2-135M-Instruct"] and "on disk" in lines["SmolLM2-135M-Instruct"]
    assert "MB" in lines["all-MiniLM-L6-v2"]
    assert "offline" in lines["GPT-2"]
