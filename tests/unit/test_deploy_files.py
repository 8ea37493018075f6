"""deploy/ and the Procfile: every Redis they start persists (AOF, fsync every second) and refuses
writes when full instead of evicting jobs; the nginx config buffers and bounds clients."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from hark.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"--appendonly": "yes", "--appendfsync": "everysec", "--maxmemory-policy": "noeviction"}


def _flags(argv: list[str]) -> dict[str, str]:
    return {arg: argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg.startswith("--")}


def _redis_commands() -> list[tuple[str, list[str], dict]]:
    found = []
    for path in sorted((ROOT / "deploy").glob("*.yml")):
        for name, service in (yaml.safe_load(path.read_text(encoding="utf-8")).get("services") or {}).items():
            command = service.get("command") or []
            command = shlex.split(command) if isinstance(command, str) else command
            if str(service.get("image", "")).startswith("redis") or command[:1] == ["redis-server"]:
                found.append((f"{path.name}:{name}", command, service))
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("redis:"):
            command = shlex.split(line.split(":", 1)[1].split("&&")[-1])
            found.append(("Procfile:redis", command, {}))
    return found


def test_there_is_a_redis_to_check() -> None:
    assert {where for where, _, _ in _redis_commands()} >= {"docker-compose.yml:redis", "Procfile:redis"}


@pytest.mark.parametrize(("where", "command", "service"), _redis_commands(), ids=[w for w, _, _ in _redis_commands()])
def test_every_redis_persists_and_never_evicts(where: str, command: list[str], service: dict) -> None:
    flags = _flags(command)
    for flag, value in REQUIRED.items():
        assert flags.get(flag) == value, f"{where}: {flag} {value} missing from {command}"
    assert flags.get("--maxmemory"), f"{where}: no --maxmemory"
    # Live sessions' result channels: a subscriber that cannot keep up is cut, not buffered without bound.
    assert flags.get("--client-output-buffer-limit") == "pubsub 256mb 128mb 300", f"{where}: pub/sub buffers unbounded"
    assert "--save" not in flags or flags["--appendonly"] == "yes"
    if service:  # compose: the AOF directory is a volume, or it is lost with the container
        data_dir = flags.get("--dir", "/data")
        assert any(str(v).endswith(f":{data_dir}") for v in service.get("volumes", [])), f"{where}: no volume"


def test_compose_apis_get_keys_and_a_staging_budget() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8"))
    env = compose["x-env"]
    assert {"HARK_API_KEYS", "HARK_AUTH", "HARK_STAGED_AUDIO_BUDGET_BYTES"} <= set(env)


def test_nginx_config_buffers_and_bounds_clients() -> None:
    text = (ROOT / "deploy" / "nginx" / "hark.conf").read_text(encoding="utf-8")
    for directive in ("proxy_request_buffering on;", "client_body_timeout", "client_header_timeout", "send_timeout",
                      "client_max_body_size", "limit_conn_zone", "limit_req_zone", "limit_conn ", "limit_req ",
                      "proxy_set_header Upgrade $http_upgrade;", "location ~ ^/(waves/v1/stt/live|transcribe)$",
                      "location = /waves/v1/pulse/get_text"):  # fmt: skip
        assert directive in text, directive
    read_timeout = re.findall(r"^\s*proxy_read_timeout (\d+)s;", text, flags=re.M)[0]  # the server-wide one
    assert int(read_timeout) > Settings.model_fields["sync_wait_seconds"].default
