"""deploy/docker-compose*.yml and the Procfile: valid for the real tools (`docker-compose config`,
honcho's parser) and laid out by the pairing rules — every API has its own worker pool under its own
HARK_DEPLOYMENT (the name makes the queues `hark.<deployment>.<checkpoint>`: a shared name would mean
shared queues), host ports are unique, Redis and the license proxy are shared and not duplicated."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml
from honcho.environ import parse_procfile

from hark.cli import SUBCOMMANDS
from hark.route_map import RouteMap
from hark.settings import Settings
from tests.unit.deploy_helpers import ROOT, assignments, env_of, hark_subcommands, healthcheck_url, procfile_entries

DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "docker-compose.yml"
OVERLAYS = {"base": [BASE], "cuda": [BASE, DEPLOY / "docker-compose.cuda.yml"],
            "prewarm": [BASE, DEPLOY / "docker-compose.prewarm.yml"]}  # fmt: skip
#: What `docker-compose config` needs from the shell (required variables).
COMPOSE_ENV = {"LICENSE_KEY": "test-license", "PREWARM_URLS": "s3://models/whisper-base/1.0.0/"}
MIN_STOP_GRACE = Settings.model_fields["shutdown_grace_seconds"].default + 15  # supervisor's STOP_MARGIN_SECONDS


def _docker_compose() -> str:
    for candidate in (ROOT / ".venv-compose" / "bin" / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("docker-compose 1.29.2 is not installed: run `make tools` (it goes to .venv-compose/)")


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    """Each file combination as `docker-compose config` resolves it (merges, overlays, variables)."""
    tool = _docker_compose()
    out = {}
    for name, files in OVERLAYS.items():
        argv = [tool, *[a for f in files for a in ("-f", str(f))], "config"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT,
                              env={**os.environ, **COMPOSE_ENV})  # fmt: skip
        assert done.returncode == 0, f"docker-compose config ({name}): {done.stderr}"
        out[name] = yaml.safe_load(done.stdout)
    return out


def _built_from(service: dict) -> str:
    build = service.get("build") or {}
    return Path(build.get("dockerfile", "")).name if isinstance(build, dict) else ""


def _apis(services: dict) -> dict[str, dict]:
    """The API tiers (one per deployment): the API image running `hark api` (not the dispatcher)."""
    return {n: s for n, s in services.items()
            if _built_from(s) == "api.Dockerfile" and hark_subcommands(s.get("command") or []) == ["api"]}  # fmt: skip


def _workers(services: dict) -> dict[str, dict]:
    return {n: s for n, s in services.items() if hark_subcommands(s.get("command") or []) == ["worker"]}


def _seconds(value: str | int) -> float:
    text = str(value)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "").isdigit():
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def test_compose_without_a_license_key_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LICENSE_KEY"}
    done = subprocess.run([_docker_compose(), "-f", str(BASE), "config", "-q"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)  # fmt: skip
    assert done.returncode != 0 and "LICENSE_KEY" in done.stderr


@pytest.mark.parametrize("combination", sorted(OVERLAYS))
def test_every_api_has_its_own_worker_pool(rendered: dict, combination: str) -> None:
    services = rendered[combination]["services"]
    apis, workers = _apis(services), _workers(services)
    api_deployments = Counter(env_of(s).get("HARK_DEPLOYMENT") for s in apis.values())
    worker_deployments = Counter(env_of(s).get("HARK_DEPLOYMENT") for s in workers.values())
    assert len(apis) >= 2 and None not in api_deployments and None not in worker_deployments
    assert all(n == 1 for n in api_deployments.values()), f"two APIs share a deployment name: {api_deployments}"
    assert all(n == 1 for n in worker_deployments.values()), f"two worker pools share queues: {worker_deployments}"
    assert set(api_deployments) == set(worker_deployments), "an API without workers, or workers without an API"
    model_urls = [env_of(s).get("MODEL_URL") for s in workers.values()]
    assert all(model_urls) and len(set(model_urls)) == len(model_urls)


@pytest.mark.parametrize("combination", sorted(OVERLAYS))
def test_host_ports_are_unique_and_shared_services_single(rendered: dict, combination: str) -> None:
    services = rendered[combination]["services"]
    host_ports = [str(p.get("published")) if isinstance(p, dict) else str(p).rsplit(":", 1)[0]
                  for s in services.values() for p in s.get("ports", [])]  # fmt: skip
    assert len(host_ports) == len(set(host_ports)), host_ports
    assert sum(str(s.get("image", "")).startswith("redis") for s in services.values()) == 1
    proxies = [n for n, s in services.items() if _built_from(s) == "license-proxy.Dockerfile"]
    assert proxies == ["license-proxy"]
    assert hark_subcommands(services["license-proxy"]["command"]) == ["license-proxy"]
    assert env_of(services["license-proxy"])["LICENSE_KEY"] == COMPOSE_ENV["LICENSE_KEY"]


def test_apis_use_the_proxy_and_probe_their_health(rendered: dict) -> None:
    services = rendered["base"]["services"]
    for name, api in _apis(services).items():
        assert env_of(api)["API_BASE_URL"] == "http://license-proxy:6699", name
        assert api["image"].startswith("hark-api")
        assert healthcheck_url(api["healthcheck"]["test"]) == "http://127.0.0.1:7100/health", name
        assert "license-proxy" in api["depends_on"] and "redis" in api["depends_on"]
        assert any(str(p.get("target") if isinstance(p, dict) else p).endswith("7100") for p in api["ports"])


@pytest.mark.parametrize("combination", sorted(OVERLAYS))
def test_workers_probe_the_metrics_port_and_drain(rendered: dict, combination: str) -> None:
    for name, worker in _workers(rendered[combination]["services"]).items():
        assert healthcheck_url(worker["healthcheck"]["test"]) == "http://127.0.0.1:9101/health", name
        assert _seconds(worker["stop_grace_period"]) >= MIN_STOP_GRACE, name
        assert _built_from(worker).startswith("worker")
        if combination == "cuda":
            assert worker["image"].startswith("hark-worker-cuda") and env_of(worker)["HARK_DEVICE"] == "cuda"
            assert env_of(worker)["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_prewarm_runs_before_every_worker(rendered: dict) -> None:
    services = rendered["prewarm"]["services"]
    for name, worker in _workers(services).items():
        assert worker["depends_on"]["checkpoint-prewarm"]["condition"] == "service_completed_successfully", name


def test_every_compose_command_exists(rendered: dict) -> None:
    for combination, config in rendered.items():
        for name, service in config["services"].items():
            for sub in hark_subcommands(service.get("command") or []):
                assert sub in SUBCOMMANDS, f"{combination}:{name} runs `hark {sub}`, not in hark.cli.SUBCOMMANDS"


def test_dispatcher_is_optional_and_routes_to_apis_of_the_file(rendered: dict) -> None:
    services = rendered["base"]["services"]
    dispatcher = services["dispatcher"]
    assert dispatcher["profiles"] == ["dispatcher"]  # `up` without --profile leaves it out
    assert hark_subcommands(dispatcher["command"]) == ["dispatcher"] and dispatcher["image"].startswith("hark-api")
    assert "dispatcher" not in _apis(services) and not env_of(dispatcher).get("HARK_DEPLOYMENT")  # not a deployment
    env = env_of(dispatcher)
    assert healthcheck_url(dispatcher["healthcheck"]["test"]) == f"http://127.0.0.1:{env['HARK_DISPATCHER_PORT']}/health"
    assert any(str(p.get("target") if isinstance(p, dict) else p).endswith(env["HARK_DISPATCHER_PORT"])
               for p in dispatcher["ports"])  # fmt: skip
    source, _, mode = next(v.split(":") for v in dispatcher["volumes"] if v.split(":")[1] == env["HARK_ROUTES"])
    assert mode == "ro"
    routes = RouteMap.from_file(source)  # the real loader
    api_urls = {f"http://{name}:7100": name for name in _apis(services)}
    routed = {url for deployment in routes.deployments for url in deployment.urls}
    assert routed <= set(api_urls), f"the map names services that are not APIs of the file: {routed - set(api_urls)}"
    assert api_urls[routes.deployment_for("en").urls[0]] == "api-english"
    assert routes.fallback is not None and api_urls[routes.fallback.urls[0]] == "api-multi"


# --- Procfile ------------------------------------------------------------------------------------


def test_procfile_parses_with_honcho() -> None:
    text = (ROOT / "Procfile").read_text(encoding="utf-8")
    parsed = parse_procfile(text)
    assert set(parsed.processes) == set(procfile_entries(ROOT / "Procfile"))
    done = subprocess.run([shutil.which("honcho") or str(Path(os.sys.executable).parent / "honcho"), "check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_procfile_commands_exist() -> None:
    for name, command in procfile_entries(ROOT / "Procfile").items():
        for sub in hark_subcommands(command):
            assert sub in SUBCOMMANDS, f"Procfile {name} runs `hark {sub}`, not in hark.cli.SUBCOMMANDS"


def test_procfile_pairs_deployments() -> None:
    entries = procfile_entries(ROOT / "Procfile")
    assert "redis" in entries and hark_subcommands(entries["license-proxy"]) == ["license-proxy"]
    apis = {n: assignments(c) for n, c in entries.items() if hark_subcommands(c) == ["api"]}
    workers = {n: assignments(c) for n, c in entries.items() if hark_subcommands(c) == ["worker"]}
    api_deployments = [a["HARK_DEPLOYMENT"] for a in apis.values()]
    worker_deployments = [w["HARK_DEPLOYMENT"] for w in workers.values()]
    assert len(api_deployments) >= 2 and sorted(api_deployments) == sorted(set(worker_deployments))
    assert len(set(worker_deployments)) == len(worker_deployments)
    api_ports = [a["HARK_API_PORT"] for a in apis.values()]
    metrics_ports = [w["HARK_WORKER_METRICS_PORT"] for w in workers.values()]
    assert len(set(api_ports + metrics_ports)) == len(api_ports) + len(metrics_ports)
    assert all("6699" in a["API_BASE_URL"] for a in apis.values())
    assert len({w["MODEL_URL"] for w in workers.values()}) == len(workers)


def test_procfile_dispatcher_routes_to_the_procfile_apis() -> None:
    entries = procfile_entries(ROOT / "Procfile")
    (name,) = [n for n, c in entries.items() if hark_subcommands(c) == ["dispatcher"]]
    env = assignments(entries[name])
    routes = RouteMap.from_file(ROOT / env["HARK_ROUTES"])  # the real loader, the path honcho runs it with
    api_ports = {a["HARK_API_PORT"]: a["HARK_DEPLOYMENT"] for a in
                 (assignments(c) for c in entries.values() if hark_subcommands(c) == ["api"])}  # fmt: skip
    routed = {url for deployment in routes.deployments for url in deployment.urls}
    assert {url.rsplit(":", 1)[1] for url in routed} == set(api_ports)
    assert all(url.startswith("http://127.0.0.1:") for url in routed)
    assert api_ports[routes.deployment_for("en").urls[0].rsplit(":", 1)[1]] == "english"
    assert env["HARK_DISPATCHER_PORT"] not in api_ports
