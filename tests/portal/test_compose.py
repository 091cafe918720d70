"""compose.yaml: the processes of design.md §2 on one Docker host, validated by Debian's
`docker-compose config` (no container runs here) with deploy/example.env; and the container
healthcheck script deploy/healthcheck.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.fixtures import require_program

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
EXAMPLE_ENV = ROOT / "deploy" / "example.env"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"

APP_SERVICES = {"web", "sipworker", "celery", "celery-beat"}
SERVICES = APP_SERVICES | {"migrate", "postgres", "redis", "kamailio", "coturn"}


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    require_program(shutil.which("docker-compose"), "docker-compose", "docker-compose")
    # Only the env file counts: a variable of the calling shell would win over it.
    return subprocess.run(
        [
            "docker-compose",
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE),
            "--env-file",
            str(env_file),
            "config",
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config():
    result = compose_config(EXAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_it_is_valid_with_the_example_env_and_has_every_process(config):
    assert set(config["services"]) == SERVICES
    assert set(config["volumes"]) == {"pgdata", "metrics"}


def test_every_service_has_a_healthcheck(config):
    for name, service in config["services"].items():
        check = service.get("healthcheck", {})
        if name == "migrate":
            # A job that exits: the others wait until it completed successfully.
            assert check in ({"disable": True}, {"test": ["NONE"]}) and service["restart"] == "no"
            continue
        assert check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert "interval" in check and "timeout" in check, name
    for name in APP_SERVICES:
        depends = config["services"][name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["postgres"] == {"condition": "service_healthy"}
        assert depends["redis"] == {"condition": "service_healthy"}


def test_it_runs_each_process_with_its_command(config):
    services = config["services"]
    assert services["web"]["command"][:1] == ["daphne"]
    assert "portal.asgi:application" in services["web"]["command"]
    assert services["sipworker"]["command"] == ["python", "manage.py", "sipworker"]
    assert services["celery"]["command"][:4] == ["celery", "-A", "portal", "worker"]
    assert services["celery-beat"]["command"][:4] == ["celery", "-A", "portal", "beat"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]


def test_two_sipworkers_share_the_hosts_rtp_range(config):
    sipworker = config["services"]["sipworker"]
    assert sipworker["scale"] == 2
    # The RTP range is the host's own (no per-port proxy; replicas share it): the SDP and ICE
    # addresses are the host's, and RtpLeg binds whichever pair is free.
    assert sipworker["network_mode"] == "host"
    env = sipworker["environment"]
    assert (env["RTP_PORT_MIN"], env["RTP_PORT_MAX"]) == ("20000", "29999")
    assert env["SIPWORKER_HEARTBEAT_FILE"] == "/tmp/sipworker.alive"
    assert "fresh" in sipworker["healthcheck"]["test"]
    assert int(sipworker["stop_grace_period"].rstrip("s")) >= 10  # time to unregister


def test_the_app_processes_share_the_metrics_directory(config):
    for name in APP_SERVICES:
        service = config["services"][name]
        assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/var/lib/browserphone/metrics"
        assert "metrics:/var/lib/browserphone/metrics:rw" in service["volumes"]


def test_postgres_and_redis_listen_on_loopback_only(config):
    assert "listen_addresses=127.0.0.1" in config["services"]["postgres"]["command"]
    redis = config["services"]["redis"]["command"]
    assert redis[redis.index("--bind") + 1] == "127.0.0.1"
    url = config["services"]["web"]["environment"]["DATABASE_URL"]
    assert url.startswith("postgres://browserphone:") and url.endswith(
        "@127.0.0.1:5432/browserphone"
    )


def test_the_pbx_image_is_built_here_not_installed_at_start(config):
    kamailio = config["services"]["kamailio"]
    assert Path(kamailio["build"]["context"]) == ROOT / "deploy" / "kamailio"
    assert "command" not in kamailio  # the image's run-dev.sh; no apt-get at container start
    dockerfile = (ROOT / "deploy" / "kamailio" / "Dockerfile").read_text()
    assert re.search(r"apt-get install .*kamailio kamailio-tls-modules", dockerfile)
    for name in ("kamailio.cfg", "kamailio-tls.cfg", "run-dev.sh", "users.demo", "lines.demo"):
        assert name in dockerfile
    coturn = config["services"]["coturn"]
    assert Path(coturn["build"]["context"]) == ROOT / "deploy" / "coturn"
    assert "turnutils_stunclient" in coturn["healthcheck"]["test"]


def test_every_variable_compose_reads_is_in_the_example_env():
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", EXAMPLE_ENV.read_text(), re.MULTILINE))
    assert used - documented == set()


def test_the_app_environment_names_only_settings_that_exist(config):
    settings_source = (ROOT / "portal" / "settings.py").read_text()
    for name in config["services"]["web"]["environment"]:
        if name == "PROMETHEUS_MULTIPROC_DIR":
            continue  # read by prometheus_client itself (portal/metrics.py)
        assert f'"{name}"' in settings_source, f"{name} is not read by portal/settings.py"


def test_a_missing_secret_stops_it(tmp_path):
    env = tmp_path / "partial.env"
    env.write_text(
        "\n".join(
            line
            for line in EXAMPLE_ENV.read_text().splitlines()
            if not line.startswith("SECRET_KEY=")
        )
    )
    result = compose_config(env)
    assert result.returncode != 0
    assert "set SECRET_KEY" in result.stderr


# -- deploy/healthcheck.py -------------------------------------------------------------------


def healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_heartbeat_file_check_reads_its_age(tmp_path):
    beat = tmp_path / "sipworker.alive"
    assert healthcheck("fresh", str(beat), "10").returncode == 1  # never beat
    beat.touch()
    assert healthcheck("fresh", str(beat), "10").returncode == 0
    os.utime(beat, (time.time() - 60, time.time() - 60))
    stale = healthcheck("fresh", str(beat), "10")
    assert stale.returncode == 1 and "last touched" in stale.stdout


def test_the_pid_check_finds_the_process(tmp_path):
    pidfile = tmp_path / "beat.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    assert healthcheck("pid", str(pidfile)).returncode == 0
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_out())
    pidfile.write_text(done.stdout)
    assert healthcheck("pid", str(pidfile)).returncode == 1


def _out():
    return {"capture_output": True, "text": True, "check": True}


@pytest.mark.django_db(transaction=True)
def test_the_http_check_asks_as_an_allowed_host(live_server):
    url = f"{live_server.url}/healthz/live"
    assert healthcheck("http", url, ALLOWED_HOSTS="localhost,phone.example.jp").returncode == 0
    refused = healthcheck("http", url, ALLOWED_HOSTS="not-allowed.example.jp")
    assert refused.returncode == 1 and "400" in refused.stdout
    unhealthy = healthcheck("http", f"{live_server.url}/healthz", ALLOWED_HOSTS="localhost")
    assert unhealthy.returncode == 1 and "503" in unhealthy.stdout  # no sipworker here
