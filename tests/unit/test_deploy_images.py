"""deploy/docker/*.Dockerfile: each image runs a `hark` command that exists, copies files that exist,
runs as a non-root user, and probes the endpoint its process really serves."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from hark.cli import SUBCOMMANDS
from hark.settings import Settings
from tests.unit.deploy_helpers import (
    DOCKER_DIR,
    ROOT,
    dockerfile_stages,
    final_stage,
    hark_subcommands,
    healthcheck_url,
)

DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))
BUILT_FROM_REPO = [p for p in DOCKERFILES if p.name != "worker-baked.Dockerfile"]
WORKER_PORT = 9101  # HARK_WORKER_METRICS_PORT's default (issue 9)
API_PORT = Settings.model_fields["api_port"].default
#: image -> the command it runs.
EXPECTED_COMMANDS = {"api.Dockerfile": ["api"], "worker.Dockerfile": ["worker"],
                     "worker-cuda.Dockerfile": ["worker"], "license-proxy.Dockerfile": ["license-proxy"]}  # fmt: skip


def _one(stage: list, keyword: str):
    found = [i for i in stage if i.keyword == keyword]
    assert found, f"no {keyword}"
    return found[-1]


def test_the_images_are_there() -> None:
    assert {p.name for p in DOCKERFILES} == {*EXPECTED_COMMANDS, "worker-baked.Dockerfile"}
    assert not (ROOT / "deploy" / "Dockerfile").exists()


@pytest.mark.parametrize("path", BUILT_FROM_REPO, ids=lambda p: p.name)
def test_runs_its_hark_command_as_non_root(path: Path) -> None:
    stage = final_stage(path)
    assert hark_subcommands(_one(stage, "CMD").argv()) == EXPECTED_COMMANDS[path.name]
    user = _one(stage, "USER").args.split(":")[0]
    assert user not in ("root", "0")


@pytest.mark.parametrize("path", BUILT_FROM_REPO, ids=lambda p: p.name)
def test_the_hark_command_exists(path: Path) -> None:
    missing = [s for s in hark_subcommands(_one(final_stage(path), "CMD").argv()) if s not in SUBCOMMANDS]
    assert not missing, f"{path.name} runs `hark {missing[0]}`, not in hark.cli.SUBCOMMANDS"


@pytest.mark.parametrize("path", BUILT_FROM_REPO, ids=lambda p: p.name)
def test_copies_only_what_exists(path: Path) -> None:
    for stage in dockerfile_stages(path):
        for copy in (i for i in stage if i.keyword == "COPY" and "--from=" not in i.args):
            for source in [w for w in copy.argv() if not w.startswith("--")][:-1]:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such file in the build context"


def test_dockerignore_lets_the_package_in() -> None:
    """The allow-list keeps every package pyproject ships, or `pip install .` builds an incomplete wheel."""
    allowed = {line[1:].strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}  # fmt: skip
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {p.rstrip("*") for p in setuptools["packages"]["find"]["include"]}
    modules = {f"{m}.py" for m in setuptools.get("py-modules", [])}
    assert packages | modules | {"pyproject.toml", "README.md"} <= allowed
    for package in packages:
        if (ROOT / package).is_dir():
            assert (ROOT / package / "__init__.py").exists()


@pytest.mark.parametrize(("name", "port"), [("api.Dockerfile", API_PORT), ("worker.Dockerfile", WORKER_PORT),
                                            ("worker-cuda.Dockerfile", WORKER_PORT),
                                            ("license-proxy.Dockerfile", 6699)])  # fmt: skip
def test_healthcheck_probes_the_process_own_health_endpoint(name: str, port: int) -> None:
    stage = final_stage(DOCKER_DIR / name)
    check = _one(stage, "HEALTHCHECK").args
    url = healthcheck_url([check]) or ""
    assert re.fullmatch(r"http://127\.0\.0\.1:(\d+|%s)/health", url), url
    env = " ".join(i.args for i in stage if i.keyword == "ENV")
    assert f"{port}" in check or re.search(rf"_PORT={port}\b", env), f"{name}: health on another port than {port}"
    exposed = {w for i in stage if i.keyword == "EXPOSE" for w in i.argv()}
    assert str(port) in exposed
    if name.startswith("worker"):
        assert "7100" not in check and "HARK_WORKER_METRICS_PORT" in check


@pytest.mark.parametrize("path", BUILT_FROM_REPO, ids=lambda p: p.name)
def test_final_images_carry_no_compilers(path: Path) -> None:
    final = " ".join(i.args for i in final_stage(path) if i.keyword == "RUN")
    assert not re.search(r"\b(build-essential|gcc|g\+\+|clang|pip install)\b", final), path.name


def test_api_image_installs_the_base_package_only() -> None:
    installs = [i.args for s in dockerfile_stages(DOCKER_DIR / "api.Dockerfile") for i in s if "pip install" in i.args]
    assert installs and all("[" not in line and "torch" not in line for line in installs)


@pytest.mark.parametrize("name", ["worker.Dockerfile", "worker-cuda.Dockerfile"])
def test_worker_images_pin_torch_first(name: str) -> None:
    runs = [i.args for s in dockerfile_stages(DOCKER_DIR / name) for i in s if i.keyword == "RUN"]
    torch = next(i for i, r in enumerate(runs) if '"torch==2.13.0"' in r and "--index-url" in r)
    extra = next(i for i, r in enumerate(runs) if "HARK_EXTRAS" in r or "[worker" in r)
    assert torch < extra


def test_cuda_image_has_cudnn_and_the_allocator_setting() -> None:
    path = DOCKER_DIR / "worker-cuda.Dockerfile"
    text = path.read_text()
    assert re.search(r"CUDA_IMAGE=nvidia/cuda:12[.\d]*-cudnn-runtime", text)
    env = " ".join(i.args for i in final_stage(path) if i.keyword == "ENV")
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in env and "HARK_DEVICE=cuda" in env


def test_baked_image_points_model_path_at_the_copied_checkpoint() -> None:
    stage = final_stage(DOCKER_DIR / "worker-baked.Dockerfile")
    assert _one(stage, "FROM").args.startswith("${WORKER_IMAGE}")
    destination = _one(stage, "COPY").argv()[-1]
    env = dict(w.split("=", 1) for w in _one(stage, "ENV").argv())
    assert env["MODEL_PATH"] == destination == env["MODEL_URL"]
    verify = _one(stage, "RUN").argv()
    assert verify[:3] == ["hark", "checkpoints", "verify"] and destination in verify and "--full" in verify
