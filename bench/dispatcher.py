"""Dispatcher overhead: the same request sent directly to a deployment vs through `hark dispatcher`.

Two pairs, each interleaved request by request in one run (so machine noise hits both sides):

1. **Real deployment**: Redis + one `hark worker` (whisper-tiny-en) + its API, a short espeak-ng clip,
   `POST /waves/v1/stt/?model=pulse&language=en` sent to the API vs to the dispatcher routing `en` to it.
2. **Instant upstream**: a minimal HTTP server (own process) that answers a fixed transcript at once,
   direct vs through the dispatcher. Model runs vary by tens of ms; this isolates the dispatcher's own cost.

Each side uses its own keep-alive session, one request at a time. Prints the table and writes the section
"Dispatcher overhead" of BENCHMARKS.md.

    .venv/bin/python bench/dispatcher.py [--requests 60] [--instant-requests 400]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.deployment import LocalPlatform, free_port  # noqa: E402
from bench.report import update_benchmarks  # noqa: E402
from checkpoints.bundled import build_bundled  # noqa: E402
from hark.settings import load_settings  # noqa: E402

TEXT = "Please call me back tomorrow morning."
INSTANT_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
BODY = json.dumps({"status": "success", "transcription": "hello", "language": "en", "request_id": "req_" + "0" * 24,
                   "metadata": {"duration": 1.0, "fileSize": 1, "processing_time_ms": 0.0, "rtfx": 1.0,
                                "deployment": "instant", "checkpoint": "none@0"}}).encode()
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between them
    def log_message(self, *args): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    do_GET = do_POST
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def make_audio(workdir: Path) -> bytes:
    wav = workdir / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(workdir / "raw.wav"), TEXT], check=True)
    subprocess.run(["sox", str(workdir / "raw.wav"), "-r", "16000", "-c", "1", str(wav)], check=True)
    return wav.read_bytes()


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def interleaved(direct: Callable[[], None], dispatched: Callable[[], None], count: int) -> tuple[list[float], ...]:
    """Latencies of both sides, alternating which goes first each round."""
    sides: tuple[list[float], list[float]] = ([], [])
    for index in range(count):
        order = (0, 1) if index % 2 == 0 else (1, 0)
        for side in order:
            start = time.perf_counter()
            (direct if side == 0 else dispatched)()
            sides[side].append((time.perf_counter() - start) * 1000)
    return sides


def row(label: str, count: int, direct: list[float], dispatched: list[float]) -> str:
    d50, x50 = statistics.median(direct), statistics.median(dispatched)
    d95, x95 = percentile(direct, 0.95), percentile(dispatched, 0.95)
    return (f"| {label} | {count} | {d50:.2f} | {x50:.2f} | **{x50 - d50:+.2f}** | {d95:.2f} | {x95:.2f} "
            f"| {x95 - d95:+.2f} |\n")  # fmt: skip


def run(model_requests: int, instant_requests: int) -> str:
    settings = load_settings()
    built = build_bundled(settings.model_cache_dir)
    model_dir = next(c.path for c in built if c.manifest.name == "whisper-tiny-en")
    workdir = Path(tempfile.mkdtemp(prefix="hark-bench-dispatcher-"))
    audio = make_audio(workdir)
    instant_port, dispatcher_port = free_port(), free_port()
    deployment = LocalPlatform(model_dir, workdir, "bench", HARK_CPU_THREADS="1", HARK_ENGINE_WORKERS="2",
                               HARK_API_WORKERS="1", HARK_API_THREADS="16")  # fmt: skip
    extra: list[subprocess.Popen] = []
    try:
        extra.append(subprocess.Popen([sys.executable, "-c", INSTANT_SERVER, str(instant_port)]))
        routes = workdir / "routes.yaml"
        routes.write_text(f"en: {deployment.url}\nde: http://127.0.0.1:{instant_port}\n")
        env = dict(deployment.env, HARK_ROUTES=str(routes), HARK_DISPATCHER_HOST="127.0.0.1",
                   HARK_DISPATCHER_PORT=str(dispatcher_port), HARK_DISPATCHER_THREADS="16")  # fmt: skip
        log = (workdir / "dispatcher.log").open("w")
        extra.append(subprocess.Popen([sys.executable, "-m", "hark.cli", "dispatcher"], env=env, cwd=ROOT,
                                      stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        dispatcher_url = f"http://127.0.0.1:{dispatcher_port}"
        wait_http(f"{dispatcher_url}/health")
        wait_http(f"http://127.0.0.1:{instant_port}/")

        def poster(base: str, language: str, body: bytes) -> Callable[[], None]:
            session = requests.Session()
            headers = {"Content-Type": "application/octet-stream"}

            def post() -> None:
                answer = session.post(f"{base}/waves/v1/stt/", params={"model": "pulse", "language": language},
                                      data=body, headers=headers, timeout=120)  # fmt: skip
                answer.raise_for_status()

            return post

        model_direct, model_via = poster(deployment.url, "en", audio), poster(dispatcher_url, "en", audio)
        instant_direct = poster(f"http://127.0.0.1:{instant_port}", "de", audio)
        instant_via = poster(dispatcher_url, "de", audio)
        for call in (model_direct, model_via, model_direct, model_via):  # warm both sides and the model
            call()
        for _ in range(20):
            instant_direct(), instant_via()
        instant = interleaved(instant_direct, instant_via, instant_requests)
        model = interleaved(model_direct, model_via, model_requests)
    finally:
        for process in extra:
            process.terminate()
        for process in extra:
            process.wait(timeout=30)
        deployment.stop()

    header = (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), Python "
        f"{platform.python_version()}. Deployment: whisper-tiny-en@1.0.0, CPU int8, beam 1, cpu_threads=1, 2 lanes; "
        f"API 1 process x 16 threads; clip {len(audio) / 32000:.1f} s of espeak-ng speech (WAV 16 kHz, "
        f"{len(audio)} bytes). Dispatcher: `hark dispatcher`, 1 process x 16 threads, keep-alive pool per "
        "replica. Instant upstream: a minimal Python HTTP server answering a fixed transcript. One request at a "
        "time per side, keep-alive client sessions, the two sides interleaved (alternating which goes first).\n\n"
        "| upstream | requests per side | direct p50 ms | via dispatcher p50 ms | added p50 ms | direct p95 ms "
        "| via dispatcher p95 ms | added p95 ms |\n|---|---|---|---|---|---|---|---|\n"
    )
    return (header + row("real deployment (model)", model_requests, *model)
            + row("instant upstream", instant_requests, *instant))  # fmt: skip


NOTES = """
Target: the dispatcher adds at most 2 ms at p50. The instant-upstream row is the dispatcher's own cost
(one more loopback hop: gunicorn parses the request, the 78 KB body is streamed to a pooled keep-alive
connection, the answer relayed). The model row cannot resolve 2 ms: single transcriptions of the same clip
spread from ~0.6 s to ~1.4 s on this shared 2-core machine (other engineers' test runs competed for the
cores during this run), so its medians differ by tens of ms in either direction from run to run: this run's
+81 ms at p50 comes with -6 ms at p95, and a shorter run the same day gave -44 ms at p50. Read the instant row
for the overhead; the model row only says the dispatcher's cost is lost in the transcription's own noise.
Before the dispatcher set TCP_NODELAY on its client sockets, the instant row showed +23 ms: gunicorn sends
the status line and headers and then the body in two writes, and the body waited for the client's delayed
ACK.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60, help="requests per side to the real deployment")
    parser.add_argument("--instant-requests", type=int, default=400, help="requests per side to the instant server")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    section = run(args.requests, args.instant_requests)
    print(section)
    if not args.no_write:
        update_benchmarks("Dispatcher overhead", section + NOTES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
