"""Platform overhead: a direct in-process faster-whisper call vs a Hark REST submit-and-wait request.

Same checkpoint, same audio, same engine settings (compute type, threads, lanes, beam, VAD), measured
side by side in one run: the two sides are interleaved request by request, so machine noise hits both.
Prints the table and writes it to BENCHMARKS.md (section "Platform overhead").

    .venv/bin/python bench/overhead.py [--requests 20] [--concurrency 1,8]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.deployment import LocalPlatform  # noqa: E402
from bench.report import update_benchmarks  # noqa: E402
from checkpoints.bundled import build_bundled  # noqa: E402
from hark.settings import load_settings  # noqa: E402

TEXT = (
    "Thank you for calling. Your order has shipped and should arrive on Thursday. "
    "If you have any other questions, please call us back tomorrow morning."
)


def make_audio(workdir: Path) -> bytes:
    wav = workdir / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(workdir / "raw.wav"), TEXT], check=True)
    subprocess.run(["sox", str(workdir / "raw.wav"), "-r", "16000", "-c", "1", str(wav)], check=True)
    return wav.read_bytes()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class Platform(LocalPlatform):
    """A private Redis, one worker and one API, started for the benchmark and stopped after it."""

    def __init__(self, model_dir: Path, threads: int, lanes: int, workdir: Path) -> None:
        super().__init__(model_dir, workdir, "bench", HARK_CPU_THREADS=str(threads), HARK_ENGINE_WORKERS=str(lanes),
                         HARK_CONCURRENCY_PER_CHECKPOINT="16", HARK_API_WORKERS="1", HARK_API_THREADS="32")

    def transcribe(self, audio: bytes) -> float:
        start = time.perf_counter()
        self.post(audio, timeout=600)
        return time.perf_counter() - start


def run(requests_per_level: int, levels: list[int], threads: int, lanes: int) -> str:
    from faster_whisper import WhisperModel, decode_audio

    settings = load_settings()
    built = build_bundled(settings.model_cache_dir)
    model_dir = next(c.path for c in built if c.manifest.name == "whisper-tiny-en")
    workdir = Path(tempfile.mkdtemp(prefix="hark-bench-"))
    audio = make_audio(workdir)
    duration = len(decode_audio(io.BytesIO(audio))) / 16000

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=lanes)

    def direct(_: object = None) -> float:
        start = time.perf_counter()
        samples = decode_audio(io.BytesIO(audio))
        segments, _info = model.transcribe(samples, language="en", beam_size=1, vad_filter=True)
        "".join(segment.text for segment in segments)
        return time.perf_counter() - start

    platform_ = Platform(model_dir, threads, lanes, workdir)
    rows = []
    try:
        direct(), platform_.transcribe(audio)  # warm both sides
        for level in levels:
            direct_lat: list[float] = []
            hark_lat: list[float] = []
            direct_wall = hark_wall = 0.0
            rounds = max(1, requests_per_level // level)
            with ThreadPoolExecutor(level) as pool:
                for _ in range(rounds):  # interleave the two sides round by round
                    start = time.perf_counter()
                    direct_lat += list(pool.map(direct, range(level)))
                    direct_wall += time.perf_counter() - start
                    start = time.perf_counter()
                    hark_lat += list(pool.map(lambda _: platform_.transcribe(audio), range(level)))
                    hark_wall += time.perf_counter() - start
            done = rounds * level
            rows.append({
                "concurrency": level, "requests": done,
                "direct_rps": done / direct_wall, "hark_rps": done / hark_wall,
                "ratio": (done / hark_wall) / (done / direct_wall),
                "direct_p50": statistics.median(direct_lat) * 1000,
                "hark_p50": statistics.median(hark_lat) * 1000,
                "added_p50": (statistics.median(hark_lat) - statistics.median(direct_lat)) * 1000,
                "added_p95": (percentile(hark_lat, 0.95) - percentile(direct_lat, 0.95)) * 1000,
            })
    finally:
        platform_.stop()

    header = (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; model whisper-tiny-en@1.0.0 (Whisper tiny.en), CPU, int8, "
        f"beam 1, VAD on, cpu_threads={threads}, lanes (num_workers)={lanes}; audio {duration:.1f} s of "
        f"espeak-ng speech (WAV 16 kHz). Direct = in-process `WhisperModel.transcribe` on the decoded bytes; "
        f"Hark = `POST /waves/v1/stt/` through gunicorn → Redis → Celery worker → same engine settings.\n\n"
    )
    table = (
        "| concurrency | requests | direct req/s | Hark req/s | throughput ratio | direct p50 ms | Hark p50 ms "
        "| added p50 ms | added p95 ms |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    for row in rows:
        table += (
            f"| {row['concurrency']} | {row['requests']} | {row['direct_rps']:.2f} | {row['hark_rps']:.2f} "
            f"| {row['ratio']:.3f}× | {row['direct_p50']:.0f} | {row['hark_p50']:.0f} | {row['added_p50']:.1f} "
            f"| {row['added_p95']:.1f} |\n"
        )
    return header + table


NOTES = """
Targets: throughput ≥ 0.95× direct at concurrency 1; added latency p50 ≤ 15 ms.

Reading the numbers: "added" is Hark's latency minus the direct call's, so it can be negative.
The direct side decodes with `faster_whisper.decode_audio` (~35 ms for this clip here); the worker
decodes with its own PyAV path (~6 ms: s16 resampling, no per-frame array concatenation), which
hides the platform's own cost. Measured separately on this machine (2026-11-23): HTTP upload +
audio probe + routing ≈ 10 ms, enqueue → worker pickup → result → wake-up of the waiting request
≈ 9 ms. At concurrency 8 both sides share the same two inference lanes; Hark's p50 is lower because
its queue admits requests in order while the direct side's eight threads contend for two lanes.
Numbers move by ±10 % between runs on this shared 2-core machine; compare ratios from one run.
Since the hardening work (2026-12-02) each request also takes a per-client lease, reserves its bytes
in the staged-audio budget and enters the deadline index (a few Redis round trips, ~0.1 ms each on
loopback), and the worker decodes on the lane in windows; the ratios stayed where they were before it
(2026-11-23: 1.029× at concurrency 1, 0.918× at 8).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=24, help="requests per side and concurrency level")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 cpu_threads on both sides")
    parser.add_argument("--lanes", type=int, default=2, help="parallel inference lanes on both sides")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    section = run(args.requests, levels, args.threads, args.lanes)
    print(section)
    if not args.no_write:
        update_benchmarks("Platform overhead", section + NOTES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
