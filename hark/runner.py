"""`hark run`: one whole deployment in the foreground (Redis check, a worker, the API).

Used by `make run`. Without MODEL_URL it serves the bundled defaults: `whisper-tiny-en`
(dedicated English) and `whisper-base` (multilingual fallback), so routing is visible
from the first request. Ctrl-C stops everything cleanly.

The API binds 127.0.0.1 unless HARK_API_HOST is set, so the no-key convenience stays on this
machine; a non-loopback HARK_API_HOST without HARK_API_KEYS is refused (exit 2) unless HARK_AUTH=off.
The children (API, worker, private redis-server) get a parent-death signal: if `hark run` itself is
SIGKILLed they stop within seconds instead of holding port 7100 for the next `make run`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

import redis
import requests

from hark.local_redis import RedisUnavailable, ensure_redis
from hark.logs import start_component
from hark.proc import die_with_parent
from hark.registry import live_instances
from hark.schemas import CheckpointInfo
from hark.settings import Settings

log = logging.getLogger("hark.run")

READY_TIMEOUT_SECONDS = 300
#: Where `hark run` binds the API when HARK_API_HOST is not set.
DEFAULT_RUN_HOST = "127.0.0.1"


def _default_model_url(settings: Settings) -> str:
    from checkpoints.bundled import build_bundled, bundled_model_urls

    build_bundled(settings.model_cache_dir)
    return bundled_model_urls(settings.model_cache_dir)


def _spawn(command: str, env: dict[str, str]) -> subprocess.Popen:
    # New process group: Ctrl-C reaches us once, and we stop children in order. The parent-death
    # signal (SIGTERM: a graceful stop) covers the case where we are killed without running `_stop`.
    return subprocess.Popen([sys.executable, "-m", "hark.cli", command], env=env, start_new_session=True,
                            preexec_fn=die_with_parent())  # fmt: skip


def _local_url(settings: Settings) -> str:
    """The URL this machine reaches the API at (the bind address unless it is a wildcard)."""
    host = settings.api_host
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def _stop(processes: list[subprocess.Popen], grace: float = 30.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(base_url: str, processes: list[subprocess.Popen], settings: Settings, expected: int) -> None:
    """Wait until the API answers /ready and every checkpoint of the worker is live."""
    client = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = "no answer yet"
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a process exited during start-up (code {process.returncode})")
        try:
            answer = requests.get(f"{base_url}/ready", timeout=2)
            live = len(live_instances(client, settings.deployment))
            if answer.status_code == 200 and live >= expected:
                return
            last = answer.json().get("error", answer.text)
        except (requests.RequestException, ValueError) as error:
            last = str(error)
        time.sleep(0.5)
    raise RuntimeError(f"the platform was not ready after {READY_TIMEOUT_SECONDS} s: {last}")


def _coverage(checkpoint: CheckpointInfo) -> str:
    return "multilingual" if checkpoint.multilingual else "/".join(checkpoint.languages)


def banner(settings: Settings, base_url: str, served: str) -> str:
    """The text printed when the platform is ready. Never contains a key: it shows where to put one."""
    auth = ' -H "Authorization: Bearer $HARK_API_KEY"' if settings.auth_required else ""
    key_hint = ("  (export HARK_API_KEY=<one of your HARK_API_KEYS> first)\n" if settings.auth_required else "")
    return (
        f"\nHark is ready: deployment {settings.deployment!r} on {base_url}\n"
        f"  serving: {served}\n\n"
        "Try it (any WAV/MP3/FLAC/OGG file):\n"
        f"{key_hint}"
        f'  curl -s -X POST "{base_url}/waves/v1/stt/?model=pulse&language=en&word_timestamps=true"'
        f'{auth} -H "Content-Type: application/octet-stream" --data-binary @your-file.wav\n'
        f"  .venv/bin/hark transcribe your-file.wav --language en\n\n"
        "Press Ctrl-C to stop.\n"
    )


def _print_banner(settings: Settings, base_url: str) -> None:
    instances = live_instances(redis.Redis.from_url(settings.redis_url), settings.deployment)
    served = ", ".join(
        f"{i.checkpoint.label} ({_coverage(i.checkpoint)}, {i.slots} slots)" for i in instances
    )
    print(banner(settings, base_url, served), flush=True)


def run_settings() -> Settings | None:
    """Settings of `hark run`: the API on 127.0.0.1 unless HARK_API_HOST is set, and auth checked.

    Returns:
        None (after logging why) when the configuration is invalid or the API would be exposed
        without keys.
    """
    settings = start_component("run")
    if settings is None:
        return None
    if "api_host" not in settings.model_fields_set:
        settings = settings.model_copy(update={"api_host": DEFAULT_RUN_HOST})
    from web.server import check_auth  # the API's own start-up check, run before anything starts

    return settings if check_auth(settings) else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hark run", description=__doc__)
    parser.parse_args(argv)
    settings = run_settings()
    if settings is None:
        return 2

    try:
        local_redis = ensure_redis(settings.redis_url, may_start="REDIS_URL" not in os.environ)
    except RedisUnavailable as error:
        log.error("%s", error)
        return 2
    if local_redis.process is not None:
        log.info("started a private redis-server for this run at %s", settings.redis_url)

    env = dict(os.environ, HF_HUB_OFFLINE="1", REDIS_URL=settings.redis_url, MODEL_URL=settings.model_url,
               HARK_API_HOST=settings.api_host)  # fmt: skip
    if "worker_metrics_host" not in settings.model_fields_set:  # the worker's /metrics stays local like the API
        env["HARK_WORKER_METRICS_HOST"] = DEFAULT_RUN_HOST
    if not settings.model_urls and not settings.model_paths:
        env["MODEL_URL"] = _default_model_url(settings)
        log.info("MODEL_URL not set: serving the bundled checkpoints %s", env["MODEL_URL"])

    base_url = _local_url(settings)
    processes = [_spawn("worker", env), _spawn("api", env)]
    interrupted = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    code = 0
    try:
        expected = len(settings.model_paths) or len(env["MODEL_URL"].split(","))
        _wait_ready(base_url, processes, settings, expected)
        _print_banner(settings, base_url)
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        log.error("a process stopped unexpectedly; shutting down the rest")
        code = 1
    except KeyboardInterrupt:
        log.info("stopping (Ctrl-C)")
    except RuntimeError as error:
        log.error("%s", error)
        code = 1
    finally:
        _stop(processes)
        local_redis.stop()
    return 0 if interrupted else code
