"""Fixtures of the fault suite: the scale, the results directory, and the fault stack.

The fault stack is one deployment on a private Redis with the deploy files' AOF persistence, so the
scenarios can kill and restart things without disturbing the rest of the test session: a worker
serving ``whisper-tiny-en`` (2 slots, short visibility timeout so a killed job comes back within the
test), its API (short submit-and-wait, signed webhooks to 127.0.0.1 allowed) and a webhook receiver.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.audio import ENGLISH_SENTENCES, AudioFactory
from tests.conftest import Checkpoints
from tests.faults.harness import AOF_ARGS, AofRedis, Scale, WebhookReceiver, current_scale, deploy_redis_args
from tests.processes import HarkProcess, Launcher

WEBHOOK_SECRET = "faults-suite-webhook-secret"

#: Settings of the fault stack. Visibility 12 s / job timeout 10 s: a killed job returns within the test.
FAULT_ENV: dict[str, str] = {
    "HARK_CONCURRENCY_PER_CHECKPOINT": "2",
    "HARK_JOB_TIMEOUT_SECONDS": "10",
    "HARK_VISIBILITY_TIMEOUT_SECONDS": "12",
    "HARK_SYNC_WAIT_SECONDS": "6",
    "HARK_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "HARK_WEBHOOK_RETRIES": "4",
    "HARK_WEBHOOK_TIMEOUT_SECONDS": "5",
    "HARK_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "HARK_JOB_DEADLINE_SECONDS": "90",
    "HARK_REAPER_INTERVAL_SECONDS": "2",
    "HARK_SHUTDOWN_GRACE_SECONDS": "1",
    "HARK_MAX_AUDIO_SECONDS": "120",
    "HARK_MAX_CONCURRENT_PER_CLIENT": "64",
    "HARK_AUTH": "off",
}

ROOT = Path(__file__).resolve().parents[2]


def redis_persistence_args() -> list[str]:
    """The deploy files' redis-server persistence arguments when they have AOF, else :data:`AOF_ARGS`."""
    args = deploy_redis_args(ROOT / "deploy" / "docker-compose.yml")
    return args if "--appendonly" in args and args[args.index("--appendonly") + 1] == "yes" else list(AOF_ARGS)


@pytest.fixture(scope="session")
def scale() -> Scale:
    return current_scale()


@pytest.fixture(scope="session")
def results_dir(session_dir: Path) -> Path:
    """Where scenarios write their rows: ``HARK_RELIABILITY_OUT`` or the session's temporary directory."""
    out = Path(os.environ.get("HARK_RELIABILITY_OUT") or session_dir / "reliability")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def load_clips(audio: AudioFactory) -> list[bytes]:
    """Short English clips (1.5-3 s) for steady load."""
    return [audio.english(i).read_bytes() for i in range(len(ENGLISH_SENTENCES))]


@dataclass
class FaultStack:
    """A deployment on its own AOF Redis: worker, API, webhook receiver."""

    redis: AofRedis
    launcher: Launcher
    deployment: str
    worker: HarkProcess
    api: HarkProcess
    receiver: WebhookReceiver
    checkpoints: Checkpoints

    @property
    def url(self) -> str:
        assert self.api.base_url
        return self.api.base_url


def build_stack(workdir: Path, checkpoints: Checkpoints, redis_args: list[str], prefix: str) -> FaultStack:
    """Start a private Redis (`redis_args`), a tiny.en worker and an API for one new deployment."""
    server = AofRedis(workdir / "redis", redis_args)
    server.start()
    launcher = Launcher(server.url, workdir / "logs", prefix)
    receiver = WebhookReceiver(WEBHOOK_SECRET)
    try:
        name = launcher.new_deployment(prefix)
        worker = launcher.start_worker(name, [checkpoints.tiny_en], **FAULT_ENV)
        api = launcher.start_api(name, **FAULT_ENV)
    except BaseException:
        launcher.stop_all()
        receiver.close()
        server.close()
        raise
    return FaultStack(redis=server, launcher=launcher, deployment=name, worker=worker, api=api, receiver=receiver,
                      checkpoints=checkpoints)  # fmt: skip


def close_stack(stack: FaultStack) -> None:
    try:
        stack.launcher.stop_all()
    finally:
        stack.receiver.close()
        stack.redis.close()


@pytest.fixture(scope="package")
def fault_stack(tmp_path_factory: pytest.TempPathFactory, bundled_checkpoints: Checkpoints) -> Iterator[FaultStack]:
    """The fault suite's deployment on a private AOF Redis (shared by the kill, restart and SIGTERM scenarios)."""
    stack = build_stack(tmp_path_factory.mktemp("fault-stack"), bundled_checkpoints, redis_persistence_args(), "f")
    try:
        yield stack
    finally:
        close_stack(stack)
