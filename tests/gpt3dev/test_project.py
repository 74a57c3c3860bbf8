"""Project-level checks: migrations match the models; production settings pass --deploy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_makemigrations_check():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.parametrize("https", ["0", "1"])
def test_check_deploy_passes_with_production_settings(tmp_path, https):
    env = {
        **os.environ,
        "SECRET_KEY": "x" * 60 + "-production-secret-for-the-check",
        "ALLOWED_HOSTS": "api.example.com",
        "SECURE_HTTPS": https,
        "GPT3DEV_VAR_DIR": str(tmp_path),
    }
    env.pop("DEBUG", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if https == "1":  # behind TLS, the transport warnings are all answered
        for warning in ("W004", "W008", "W012", "W016"):
            assert warning not in result.stderr


def test_manage_check_does_not_import_torch(tmp_path):
    """Nothing heavy at start-up: `check` and `migrate` must not load the engine."""
    code = "import sys, django; django.setup(); from django.core.management import call_command; " \
           "call_command('check'); print('torch' in sys.modules)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gpt3dev.settings", "GPT3DEV_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr
