"""Fixtures shared by the whole suite: a private real Redis, the checkpoints, test audio, and
factories that start real `hark worker` / `hark api` processes and always stop them.

Scopes are chosen for speed on a 2-core machine: Redis, the checkpoints, the audio cache and one
shared deployment (tiny.en + base worker, API) live for the whole session; tests that need another
configuration start their own processes through the `hark` (per test) or `module_hark` (per module)
launchers. When a test fails, the log lines its processes wrote during the test are attached to the
report.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.audio import AudioFactory
from tests.processes import (
    ALL_PROCESSES,
    HarkProcess,
    Launcher,
    flush_deployment,
    new_deployment_name,
    reap_session_processes,
    start_redis,
)

# --- failure reports with process logs ----------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    results = getattr(item, "funcargs", {}).get("results_dir")
    if report.when == "call" and isinstance(results, Path):  # fault/abuse rows: note whether the guarantee held
        from tests.faults.harness import record_outcome

        record_outcome(results, item.nodeid, report.outcome)
    if report.when not in ("setup", "call") or not report.failed:
        return
    offsets: dict[int, int] = getattr(item, "_hark_log_offsets", {})
    for process in ALL_PROCESSES:
        start = offsets.get(id(process), 0)
        if process.log_size() > start:
            report.sections.append((f"log of {process.name} (pid {process.pid})", process.log_text(start)))


@pytest.fixture(autouse=True)
def _remember_log_offsets(request: pytest.FixtureRequest) -> Iterator[None]:
    request.node._hark_log_offsets = {id(p): p.log_size() for p in ALL_PROCESSES}
    yield


def _order(item: pytest.Item) -> int:
    parts = item.nodeid.split("/")
    if "faults" in parts or "abuse" in parts:
        return 2
    return 1 if "e2e" in parts else 0


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fast unit tests first (quick feedback with -x), then the end-to-end tests, then faults and abuse.

    Tests marked ``slow`` run only at ``HARK_FAULTS_SCALE=full`` (``make faults``).
    """
    items.sort(key=_order)
    if os.environ.get("HARK_FAULTS_SCALE", "fast").strip().lower() != "full":
        skip = pytest.mark.skip(reason="full scale only: HARK_FAULTS_SCALE=full (make faults)")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftovers = reap_session_processes()
    if leftovers:
        print(f"\n[hark tests] killed {len(leftovers)} leftover process(es): {leftovers}")


# --- Redis ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary directory for the whole session (logs, Redis, generated checkpoints)."""
    return tmp_path_factory.mktemp("hark-session")


@pytest.fixture(scope="session")
def redis_url(session_dir: Path) -> Iterator[str]:
    """A private real redis-server for the session, or HARK_TEST_REDIS_URL when set."""
    external = os.environ.get("HARK_TEST_REDIS_URL")
    if external:
        yield external
        return
    process, url = start_redis(session_dir / "redis")
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except Exception:
            process.kill()


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    client.close()


@pytest.fixture
def deployment(redis_client: redis.Redis) -> Iterator[str]:
    """A unique deployment name for one test; its keys are deleted afterwards."""
    name = new_deployment_name("t")
    yield name
    flush_deployment(redis_client, name)


# --- checkpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoints:
    tiny_en: Path
    base: Path


@pytest.fixture(scope="session")
def bundled_checkpoints() -> Checkpoints:
    """The two bundled checkpoints (built into the cache by `checkpoints.bundled` if missing)."""
    from checkpoints.bundled import build_bundled
    from hark.settings import load_settings

    built = build_bundled(load_settings().model_cache_dir, progress=False)
    paths = {c.manifest.name: c.path for c in built}
    return Checkpoints(tiny_en=paths["whisper-tiny-en"], base=paths["whisper-base"])


@pytest.fixture(scope="session")
def hindi_checkpoint(bundled_checkpoints: Checkpoints, session_dir: Path) -> Path:
    """A third checkpoint: the whisper-base files packed as a dedicated Hindi checkpoint."""
    from checkpoints.pack import pack

    return pack(bundled_checkpoints.base, session_dir / "whisper-base-hi", name="whisper-base-hi",
                version="1.0.0", languages=["hi"], multilingual=False, compute_type="int8",
                progress=False)  # fmt: skip


@pytest.fixture
def corrupted_tiny_en(bundled_checkpoints: Checkpoints, tmp_path: Path) -> Path:
    """A copy of tiny.en whose vocabulary file has flipped bytes (manifest untouched)."""
    copy = tmp_path / "whisper-tiny-en-corrupt"
    shutil.copytree(bundled_checkpoints.tiny_en, copy)
    victim = copy / "vocabulary.txt"
    data = bytearray(victim.read_bytes())
    for index in range(0, min(len(data), 64)):
        data[index] ^= 0xFF
    victim.write_bytes(bytes(data))
    return copy


# --- audio ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def audio(session_dir: Path) -> AudioFactory:
    """Generated test clips, cached for the session."""
    return AudioFactory(session_dir / "audio")


# --- processes -----------------------------------------------------------------------------------


@pytest.fixture
def hark(redis_url: str, tmp_path: Path) -> Iterator[Launcher]:
    """Start worker/API processes for one test; all stopped (and keys flushed) afterwards."""
    launcher = Launcher(redis_url, tmp_path / "logs", "test")
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def module_hark(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Like `hark`, for processes shared by the tests of one module."""
    launcher = Launcher(redis_url, tmp_path_factory.mktemp("module-logs"), "module")
    try:
        yield launcher
    finally:
        launcher.stop_all()


@dataclass
class Deployment:
    """A running deployment: its name, API base URL and processes."""

    name: str
    url: str
    api: HarkProcess
    worker: HarkProcess
    redis: redis.Redis


#: Settings of the shared deployment, chosen so most tests can use it as is:
#: small limits for the size/duration rows of the bad-input table, webhooks to 127.0.0.1 allowed,
#: two slots per checkpoint (the slot test checks "at most 2" on it).
SHARED_ENV: dict[str, str] = {
    "HARK_CONCURRENCY_PER_CHECKPOINT": "2",
    "HARK_MAX_UPLOAD_BYTES": str(2_000_000),
    "HARK_MAX_AUDIO_SECONDS": "30",
    "HARK_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "HARK_WEBHOOK_RETRIES": "3",
    "HARK_SYNC_WAIT_SECONDS": "120",
    "HARK_API_WORKERS": "2",
}


@pytest.fixture(scope="session")
def shared_launcher(redis_url: str, session_dir: Path) -> Iterator[Launcher]:
    launcher = Launcher(redis_url, session_dir / "shared-logs", "shared")
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture(scope="session")
def shared_deployment(shared_launcher: Launcher, bundled_checkpoints: Checkpoints) -> Deployment:
    """One deployment for most e2e tests: a worker serving tiny.en + base, and its API."""
    name = shared_launcher.new_deployment("shared")
    worker = shared_launcher.start_worker(name, [bundled_checkpoints.tiny_en, bundled_checkpoints.base],
                                          **SHARED_ENV)  # fmt: skip
    api = shared_launcher.start_api(name, **SHARED_ENV)
    assert api.base_url
    return Deployment(name=name, url=api.base_url, api=api, worker=worker, redis=shared_launcher.redis)
