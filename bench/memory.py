"""Worker memory on a 4-hour upload: the streamed, windowed worker vs the old whole-file decode.

Both sides load the same checkpoint with the same engine settings and get the same file (a 4-hour
16 kHz FLAC of silence with a few sentences at the start, the middle and the end: ~3 MB that decodes to
~920 MB of float32), measured in one run:

- **Hark** — a real ``hark worker`` (private redis-server, the API in front): the resident set of the
  worker's model child is sampled every 20 ms while idle and then while the upload goes through
  ``POST /waves/v1/stt/`` (once alone, then four at once: two run, two wait for a lane).
- **Old approach** — a fresh Python process loads the same model and does what the worker did before
  the windowed engine: ``decode_audio`` of the whole file to float32 (chunks joined once), then one
  ``WhisperModel.transcribe(samples, vad_filter=True)``. The same sampler watches it.

Prints the table and writes it to BENCHMARKS.md (section "Worker memory on long audio").

    .venv/bin/python bench/memory.py [--hours 4] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.deployment import LocalPlatform  # noqa: E402
from bench.report import update_benchmarks  # noqa: E402
from checkpoints.bundled import build_bundled  # noqa: E402
from hark.settings import load_settings  # noqa: E402

SENTENCE = "Please call me back tomorrow morning about the delivery of the new furniture."
THREADS = 1
LANES = 2
SAMPLE_SECONDS = 0.02
TARGET_DELTA_MB = 300


def make_input(workdir: Path, hours: float) -> Path:
    """A FLAC of `hours` of silence with speech at the start, the middle and the end (sox, espeak-ng)."""
    speech = workdir / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(workdir / "raw.wav"), SENTENCE], check=True)
    subprocess.run(["sox", str(workdir / "raw.wav"), "-r", "16000", "-c", "1", "-b", "16", str(speech)], check=True)
    total = hours * 3600
    speech_seconds = float(subprocess.run(["soxi", "-D", str(speech)], capture_output=True, text=True,
                                          check=True).stdout)  # fmt: skip
    gap = (total - 3 * speech_seconds) / 2 - 0.5  # stay under HARK_MAX_AUDIO_SECONDS (4 h)
    silence = workdir / "gap.flac"
    subprocess.run(["sox", "-D", "-n", "-r", "16000", "-c", "1", "-b", "16", str(silence), "trim", "0", f"{gap:.3f}"],
                   check=True)  # fmt: skip
    out = workdir / f"{hours:g}h.flac"
    subprocess.run(["sox", str(speech), str(silence), str(speech), str(silence), str(speech), str(out)], check=True)
    return out


class Sampler:
    """The peak resident set of one process, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def rss(self) -> int:
        return self.process.memory_info().rss

    def idle(self, seconds: float = 3.0) -> int:
        """The largest RSS over `seconds` of doing nothing."""
        deadline, peak = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            peak = max(peak, self.rss())
            time.sleep(SAMPLE_SECONDS)
        return peak

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.NoSuchProcess:
                return

    def __enter__(self) -> Sampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Worker(LocalPlatform):
    """A private redis-server, a ``hark worker`` serving one checkpoint and its API."""

    def __init__(self, model_dir: Path, workdir: Path) -> None:
        super().__init__(model_dir, workdir, "bench-memory", HARK_CPU_THREADS=str(THREADS),
                         HARK_ENGINE_WORKERS=str(LANES), HARK_CONCURRENCY_PER_CHECKPOINT="8", HARK_API_WORKERS="1",
                         HARK_API_THREADS="16", HARK_SYNC_WAIT_SECONDS="1800")  # fmt: skip

    def model_child(self) -> int:
        """The pid of the worker's model child (``python -m workers.child model ...``)."""
        for child in psutil.Process(self.worker_pid).children(recursive=True):
            command = child.cmdline()
            if "workers.child" in command and "model" in command:
                return child.pid
        raise RuntimeError("no model child found")

    def transcribe(self, audio: bytes) -> dict:
        return self.post(audio, timeout=1800).json()


def old_side_main(model_dir: str, audio_path: str) -> int:
    """The old worker path in this process: load, warm up, say "ready", wait for "go", decode all, transcribe."""
    import numpy as np
    from faster_whisper import WhisperModel

    from workers.audio import decode_audio

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=THREADS, num_workers=LANES,
                         local_files_only=True)  # fmt: skip
    noise = np.random.default_rng(0).normal(0.0, 0.01, 16000).astype(np.float32)
    for _ in model.transcribe(noise, language="en", beam_size=1, vad_filter=True)[0]:
        pass
    data = Path(audio_path).read_bytes()
    print("ready", flush=True)
    sys.stdin.readline()
    samples = decode_audio(data, 4 * 3600 + 60).samples
    segments, _info = model.transcribe(samples, language="en", beam_size=1, vad_filter=True)
    text = "".join(segment.text for segment in segments)
    print(f"done {len(samples) / 16000:.0f} {text.strip()!r}", flush=True)
    return 0


def measure_old(model_dir: Path, audio_path: Path) -> tuple[int, int, float, str]:
    """(idle RSS, peak RSS, seconds, output line) of the old approach in a fresh process."""
    process = subprocess.Popen([sys.executable, __file__, "--old-side", str(model_dir), str(audio_path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                               env=dict(os.environ, HF_HUB_OFFLINE="1"))  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("the old-approach process did not start")
    sampler = Sampler(process.pid)
    idle = sampler.idle()
    started = time.perf_counter()
    with sampler:
        process.stdin.write("go\n")
        process.stdin.flush()
        line = process.stdout.readline().strip()
        process.wait(timeout=60)
    return idle, sampler.peak, time.perf_counter() - started, line


def measure_hark(worker: Worker, audio: bytes, concurrent: int) -> tuple[int, int, float, list[dict]]:
    """(idle RSS, peak RSS, seconds, answers) of the worker's model child for `concurrent` uploads."""
    sampler = Sampler(worker.model_child())
    idle = sampler.idle()
    started = time.perf_counter()
    with sampler, ThreadPoolExecutor(concurrent) as pool:
        answers = list(pool.map(lambda _: worker.transcribe(audio), range(concurrent)))
    return idle, sampler.peak, time.perf_counter() - started, answers


def run(hours: float) -> str:
    from workers.engine import WINDOW_SECONDS

    settings = load_settings()
    model_dir = next(c.path for c in build_bundled(settings.model_cache_dir) if c.manifest.name == "whisper-tiny-en")
    workdir = Path(tempfile.mkdtemp(prefix="hark-bench-memory-"))
    audio_path = make_input(workdir, hours)
    audio = audio_path.read_bytes()
    rows: list[tuple[str, int, int, float, str]] = []
    worker = Worker(model_dir, workdir)
    try:
        for concurrent in (1, 4):
            idle, peak, took, answers = measure_hark(worker, audio, concurrent)
            words = len(answers[0]["transcription"].split())
            label = f"Hark worker, {concurrent} request{'s' if concurrent > 1 else ''} at once"
            rows.append((label, idle, peak, took, f"{answers[0]['metadata']['duration']:.0f} s, {words} words"))
            print(rows[-1], flush=True)
    finally:
        worker.stop()
    idle, peak, took, line = measure_old(model_dir, audio_path)
    seconds, _, text = line.removeprefix("done ").partition(" ")
    rows.append(("old approach (whole file decoded, 1 request)", idle, peak, took,
                 f"{float(seconds):.0f} s, {len(text.split())} words"))  # fmt: skip
    print(rows[-1], flush=True)

    new_delta = rows[0][2] - rows[0][1]
    header = (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GB RAM, Python {platform.python_version()}; model "
        f"whisper-tiny-en@1.0.0 (Whisper tiny.en), CPU, int8, beam 1, VAD on, cpu_threads={THREADS}, "
        f"lanes={LANES}, window {WINDOW_SECONDS:g} s. Input: {hours:g} h of 16 kHz mono FLAC "
        f"({len(audio) / 2**20:.2f} MB; {hours * 3600 * 16000 * 4 / 2**20:.0f} MB as float32): silence with "
        f"a sentence at the start, the middle and the end. RSS of the process that transcribes (the worker's "
        f"model child; the old approach's own process), sampled every {SAMPLE_SECONDS * 1000:.0f} ms.\n\n"
    )
    table = "| side | idle RSS MB | peak RSS MB | delta MB | delta / float32 size | wall s | answer |\n"
    table += "|---|---|---|---|---|---|---|\n"
    float32 = hours * 3600 * 16000 * 4
    for label, idle, peak, took, answer in rows:
        delta = peak - idle
        table += (f"| {label} | {idle / 2**20:.0f} | {peak / 2**20:.0f} | {delta / 2**20:+.0f} "
                  f"| {delta / float32:.2f} | {took:.0f} | {answer} |\n")  # fmt: skip
    old_delta = rows[-1][2] - rows[-1][1]
    first_idle, busiest = rows[0][1], max(rows[0][2], rows[1][2])
    table += (
        f"\nTarget: delta ≤ {TARGET_DELTA_MB} MB for one {hours:g}-hour request: "
        f"{'met' if new_delta <= TARGET_DELTA_MB * 2**20 else 'MISSED'} ({new_delta / 2**20:.0f} MB); "
        f"the old approach's delta is {old_delta / max(new_delta, 1):.1f}× the new one. The second row's idle "
        f"is what the child kept after the first request (the allocator holds freed pages); against the idle "
        f"before any request, the worker's highest peak is {(busiest - first_idle) / 2**20:+.0f} MB. While two "
        f"requests run, the two waiting hold {len(audio) / 2**20:.2f} MB of FLAC each.\n"
    )
    return header + table


NOTES = """
Reading the numbers: the delta is the peak minus the idle RSS of the same process. The worker keeps the
upload's encoded bytes and pulls two-minute windows from the PyAV decoder on the inference lane; what
remains of the delta is mostly Silero VAD's working memory over one window (~85 MB per lane, freed after
each call; ONNX Runtime allocates ~0.7 MB per second of audio it scores at once) and, for windows with
speech, Whisper's features and decoder state. It does not grow with the duration (see
`tests/unit/test_workers_memory.py`: 4 min and 40 min peak the same). Four requests at once run two at a
time on the two lanes, each with its own window. The old approach held the whole float32 array (twice
while joining the decoded pieces) and faster-whisper then ran VAD (in 320 s batches) and built features
over all of it; before the fix, requests waiting for a lane also held their decoded arrays, which is how
four such uploads grew a worker by ~11 GB. Wall times: both sides run VAD over the whole file; the Hark
side also goes through HTTP, Redis and the lane queue, and the four-request row shares two cores.
"""


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--old-side":
        return old_side_main(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=4.0, help="duration of the input (default: 4)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    section = run(args.hours)
    print(section)
    if not args.no_write:
        update_benchmarks("Worker memory on long audio", section + NOTES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
