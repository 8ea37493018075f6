"""What the license gate costs a request: latency through the API with the license proxy up vs down.

A private deployment (Redis, a worker on whisper-tiny-en, the API with ``API_BASE_URL`` set and the
license checked every second) and a real ``hark license-proxy``. Requests alternate in blocks between
the proxy answering and the proxy frozen (SIGSTOP: its port accepts connections that never answer, the
worst case for the background check), the same clip each time, so both sides see the same machine state.
Prints the table and writes it to BENCHMARKS.md (section "License gate").

    python -m bench.license [--requests 20] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.deployment import ROOT, LocalPlatform, free_port
from bench.overhead import make_audio
from bench.report import update_benchmarks
from checkpoints.bundled import build_bundled
from hark.license import issue, new_private_key, public_key_text
from hark.settings import load_settings

BLOCK = 5


def start_proxy(env: dict[str, str], port: int, workdir: Path) -> subprocess.Popen:
    signer = new_private_key()
    proxy_env = dict(env, LICENSE_KEY=issue(signer, customer="bench", expires_at=int(time.time()) + 86400),
                     HARK_LICENSE_PUBLIC_KEYS=public_key_text(signer.public_key()),
                     HARK_LICENSE_PROXY_HOST="127.0.0.1", HARK_LICENSE_PROXY_PORT=str(port))  # fmt: skip
    log = (workdir / "license-proxy.log").open("w")
    proxy = subprocess.Popen([sys.executable, "-m", "hark.cli", "license-proxy"], env=proxy_env, cwd=ROOT,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proxy
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"the license proxy did not start; see {workdir / 'license-proxy.log'}")


def run(count: int) -> str:
    settings = load_settings()
    model_dir = next(c.path for c in build_bundled(settings.model_cache_dir) if c.manifest.name == "whisper-tiny-en")
    workdir = Path(tempfile.mkdtemp(prefix="hark-bench-license-"))
    audio = make_audio(workdir)
    proxy_port = free_port()
    deployment = LocalPlatform(model_dir, workdir, "bench-license", API_BASE_URL=f"http://127.0.0.1:{proxy_port}",
                               HARK_LICENSE_CHECK_SECONDS="1")  # fmt: skip
    proxy = start_proxy(deployment.env, proxy_port, workdir)
    up: list[float] = []
    down: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while True:  # the API's first check ran before the proxy was up: wait for the next one
            try:
                deployment.post(audio, timeout=60)
                break
            except requests.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        while len(down) < count:
            for side, frozen in ((up, False), (down, True)):
                os.killpg(proxy.pid, signal.SIGSTOP if frozen else signal.SIGCONT)
                time.sleep(1.5)  # at least one background check runs in this state
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    deployment.post(audio, timeout=60)
                    side.append(time.perf_counter() - start)
    finally:
        os.killpg(proxy.pid, signal.SIGCONT)
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(timeout=10)
        deployment.stop()
    p50_up, p50_down = statistics.median(up) * 1000, statistics.median(down) * 1000
    header = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; one API, one worker on "
              f"whisper-tiny-en (CPU, int8), the same clip per request, license checked every 1 s; {len(up)} "
              f"requests per side in interleaved blocks of {BLOCK}. Down = the proxy frozen with SIGSTOP (checks hang "
              "until their 5 s timeout).\n\n")  # fmt: skip
    table = ("| side | requests | p50 ms | mean ms | max ms |\n|---|---|---|---|---|\n"
             + "".join(f"| proxy {name} | {len(v)} | {statistics.median(v) * 1000:.0f} | "
                       f"{statistics.mean(v) * 1000:.0f} | {max(v) * 1000:.0f} |\n"
                       for name, v in (("up", up), ("down", down)))
             + f"\nRatio of p50 latencies, down / up: **{p50_down / p50_up:.3f}×**.\n")  # fmt: skip
    return header + table


NOTES = """
The gate reads only the license state cached in the API process; the proxy is asked by a background
thread, so a proxy that is down (within HARK_LICENSE_GRACE_SECONDS) should not move a request's latency:
a ratio near 1.0 (within this shared machine's ±10 % noise) is the expected result.
"""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.license", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--requests", type=int, default=20, help="requests per side")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    body = run(args.requests) + NOTES
    print(body)
    if not args.no_write:
        update_benchmarks("License gate", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
