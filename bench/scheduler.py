"""Scheduler layouts side by side, in one run: throughput and latency of the executor under load.

In-process (no Redis, no API: the executor and the engine only), tiny.en int8, beam 5 (``--beam``), on
short English clips (espeak-ng, 2.6-7 s). Each layout is a :class:`~workers.executor.CheckpointExecutor`
over a :class:`~workers.engine.WhisperEngine`:

- ``split``: 2 lanes x (cores / 2) threads, batch 1 on CPU (``HARK_SOLO_REPLICA=off``);
- ``split+solo``: the default — the same, plus a replica with all the cores for a request running alone;
- ``all-cores``: 2 lanes x all the cores each (a lone request on every core, oversubscribed under load);
- ``one-lane``: 1 lane x all the cores;
- ``all-cores-b4``: 2 x all the cores with batches of up to 4 (encoder shared), to show what batching does;
- ``split+solo+pack``: the default plus ``HARK_PACKING=on`` (batches of up to 8, short clips packed).

N closed-loop clients each submit a clip, wait for its transcript and submit the next. Throughput is
a ratio to a plain sequential loop of ``WhisperModel.transcribe`` (faster-whisper defaults, same
weights, audio and beam) measured in the same run; latencies (submit to transcript) skip each client's
first request (the start-up burst), so p95/p50 shows the steady state's ordering.

    .venv/bin/python bench/scheduler.py [--clients 1,8,32] [--beam 5] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.report import update_benchmarks  # noqa: E402
from checkpoints.manifest import load_manifest  # noqa: E402
from hark.schemas import TranscriptionOptions  # noqa: E402
from tests.audio import ENGLISH_SENTENCES, AudioFactory  # noqa: E402
from workers.audio import EncodedAudio, decode_audio  # noqa: E402
from workers.device import DevicePlan, cpu_count  # noqa: E402
from workers.engine import WhisperEngine  # noqa: E402
from workers.executor import CheckpointExecutor  # noqa: E402
from workers.pack_stage import PackStage  # noqa: E402
from workers.packing import WindowPacker  # noqa: E402

CHECKPOINT = Path.home() / ".cache/hark/checkpoints/whisper-tiny-en/1.0.0"
OPTIONS = TranscriptionOptions(language="en")


def clips(factory: AudioFactory) -> list[bytes]:
    """Ten clips: the five sentences, and each joined with the next (about 2.6-7 s)."""
    singles = [factory.english(index) for index in range(len(ENGLISH_SENTENCES))]
    following = ENGLISH_SENTENCES[1:] + ENGLISH_SENTENCES[:1]
    pairs = [factory.speech(f"{a}, and {b}") for a, b in zip(ENGLISH_SENTENCES, following, strict=True)]
    return [path.read_bytes() for path in singles + pairs]


def direct_sequential(data: list[bytes], beam: int, rounds: int) -> float:
    """Seconds per clip of a plain sequential faster-whisper loop (its default threads)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(CHECKPOINT), device="cpu", compute_type="int8", local_files_only=True)
    samples = [decode_audio(clip, 120).samples for clip in data]
    for _ in model.transcribe(samples[0], language="en", beam_size=beam, vad_filter=True)[0]:
        pass
    started = time.perf_counter()
    for _ in range(rounds):
        for audio in samples:
            segments, _info = model.transcribe(audio, language="en", beam_size=beam, vad_filter=True)
            "".join(segment.text for segment in segments)
    return (time.perf_counter() - started) / (rounds * len(samples))


def run_load(executor: CheckpointExecutor, data: list[bytes], clients: int, per_client: int) -> dict[str, float]:
    """Closed loop: `clients` threads each submit `per_client` clips one after another."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(offset: int) -> None:
        for turn in range(per_client):
            clip = data[(offset + turn) % len(data)]
            sent = time.perf_counter()
            executor.run(EncodedAudio(clip, 120), OPTIONS, timeout=600)
            if turn:
                with lock:
                    latencies.append(time.perf_counter() - sent)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"per_clip": elapsed / (clients * per_client), "p50": statistics.median(latencies),
            "p95": latencies[max(0, int(len(latencies) * 0.95) - 1)]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--layouts", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--per-client", type=int, default=0, help="requests per client (default 24 / clients, >= 3)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    cores = cpu_count()
    data = clips(AudioFactory(Path(tempfile.gettempdir()) / "hark-bench-audio"))
    manifest = load_manifest(CHECKPOINT)
    layouts = {  # name: (lanes, threads per lane, max_batch)
        "split": (2, max(1, cores // 2), 1),
        "split+solo": (2, max(1, cores // 2), 1),
        "all-cores": (2, cores, 1),
        "one-lane": (1, cores, 1),
        "all-cores-b4": (2, cores, 4),
        "split+solo+pack": (2, max(1, cores // 2), 8),
    }
    engines = {name: WhisperEngine(CHECKPOINT, DevicePlan("cpu", "int8", lanes, threads), languages=manifest.languages,
                                   multilingual=manifest.multilingual, beam_size=args.beam,
                                   solo_threads=cores if name.startswith("split+solo") else 0)
               for name, (lanes, threads, _batch) in layouts.items()}  # fmt: skip
    for engine in engines.values():
        engine.warm_up()
    engines["split+solo+pack"].pack_stage = PackStage(WindowPacker(engines["split+solo+pack"], max_seconds=10))
    chosen = [name for name in layouts if not args.layouts or name in args.layouts.split(",")]
    direct = direct_sequential(data, args.beam, rounds=2)
    print(f"direct sequential: {direct * 1000:.0f} ms/clip")
    rows = []
    for clients in [int(part) for part in args.clients.split(",")]:
        per_client = args.per_client or max(3, 24 // clients)
        for name in chosen:
            lanes, threads, batch = layouts[name]
            with CheckpointExecutor(engines[name], slots=max(clients, 1), lanes=lanes, max_batch=batch,
                                    batch_wait=0.005, share_batches=name.endswith("+pack")) as executor:  # fmt: skip
                result = run_load(executor, data, clients, per_client)
            ratio = direct / result["per_clip"]
            rows.append(f"| {name} | {lanes} x {threads} | {batch} | {clients} | {result['per_clip'] * 1000:.0f} | "
                        f"{ratio:.2f}x | {result['p50']:.2f} | {result['p95']:.2f} | "
                        f"{result['p95'] / result['p50']:.2f} |")  # fmt: skip
            print(rows[-1], flush=True)
    body = "\n".join([
        f"Machine: {platform.machine()}, {cores} cores (shared), {platform.python_version()}; tiny.en int8, "
        f"beam {args.beam}, {len(data)} English clips of 2.6-7 s, in-process executor (bench/scheduler.py). "
        f"Throughput ratio = a plain sequential faster-whisper loop ({direct * 1000:.0f} ms/clip, same run) / "
        "per-clip time; latency skips each client's first request.",
        "",
        "| layout | lanes x threads | max batch | clients | ms/clip | vs direct | p50 s | p95 s | p95/p50 |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    if not args.no_write:
        update_benchmarks("Scheduler layouts (in-process executor)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
