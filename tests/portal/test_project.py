"""Project-level checks: migrations in sync, production settings pass `check --deploy`."""

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]


def test_it_has_no_missing_migrations(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def _manage(*args, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_passes_the_deployment_checklist_with_production_settings(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY="x" * 20 + "production-like-secret-key-with-enough-entropy-9f8e7d6c",
        SIP_PASSWORD_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="phone.example.jp",
        VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_it_refuses_to_start_in_production_without_a_secret_key(tmp_path):
    result = _manage("check", DEBUG="false", VAR_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_it_refuses_to_start_with_a_malformed_sip_password_key(tmp_path):
    good = Fernet.generate_key().decode()
    for keys in ("not-a-fernet-key", f"{good},{good[:-4]}"):  # garbage; a truncated second key
        result = _manage("check", SIP_PASSWORD_KEY=keys, VAR_DIR=str(tmp_path))
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr and "SIP_PASSWORD_KEY" in result.stderr
        assert "not a Fernet key" in result.stderr
        assert keys.split(",")[-1] not in result.stderr  # a secret: never echoed into logs
    assert _manage("check", SIP_PASSWORD_KEY=good, VAR_DIR=str(tmp_path)).returncode == 0
