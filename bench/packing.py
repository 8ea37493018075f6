"""Window packing against solo decoding: throughput and WER on 20 short clips, one process, one run.

    python bench/packing.py [--rounds 3] [--beams 5,1] [--separators 0.3,0.5,1.0,1.5] [--no-write]

Twenty espeak-ng sentences (2.6-6.1 s each) are decoded to 16 kHz once. For each beam the same clips go
through three sides, interleaved round by round (direct, solo, packed, direct, solo, packed...), on one
tiny.en int8 model with all the machine's cores (one lane):

- **direct**: a plain sequential loop of ``WhisperModel.transcribe`` (no VAD, the engine's defaults),
  the issue's reference;
- **solo**: Hark's engine path, one request at a time (``WhisperEngine.transcribe``, VAD, no word
  timestamps: the default request);
- **packed**: ``WindowPacker.pack`` over all 20 (trimming, windows, mapping back), plus a solo decode
  of every request it sends to the fallback, all inside the timed span.

Reported: audio seconds per wall second of each side (best round), packed and solo against direct,
WER of each side against the spoken text, fallbacks and windows. A separator sweep (beam 5, one pass
each) shows how the silence between requests changes splits, fallbacks and WER. The machine is shared:
the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_benchmarks  # noqa: E402
from checkpoints.bundled import build_bundled  # noqa: E402
from hark.schemas import TranscriptionOptions  # noqa: E402
from hark.settings import load_settings  # noqa: E402
from tests.audio import ENGLISH_CORPUS, AudioFactory  # noqa: E402
from tests.e2e.helpers import wer  # noqa: E402
from workers.audio import SAMPLE_RATE, PcmAudio, decode_audio  # noqa: E402
from workers.device import DevicePlan  # noqa: E402
from workers.engine import WhisperEngine  # noqa: E402
from workers.packing import SEPARATOR_SECONDS, PackRequest, WindowPacker  # noqa: E402

SENTENCES = ENGLISH_CORPUS[:20]  # the 20 clips above; a slice, so appending to the corpus changes nothing here
OPTIONS = TranscriptionOptions(language="en")


def _clips(cache: Path) -> list:
    factory = AudioFactory(cache)
    return [decode_audio(factory.speech(text).read_bytes(), 60).samples for text in SENTENCES]


def _direct(engine: WhisperEngine, clips: list) -> list[str]:
    texts = []
    for samples in clips:
        segments, _info = engine.model.transcribe(samples, language="en", beam_size=engine.beam_size)
        texts.append("".join(segment.text for segment in segments).strip())
    return texts


def _solo(engine: WhisperEngine, clips: list) -> list[str]:
    return [engine.transcribe(PcmAudio(samples), OPTIONS).text for samples in clips]


def _packed(engine: WhisperEngine, clips: list, separator: float, stats: dict) -> list[str]:
    packer = WindowPacker(engine, max_seconds=10.0, separator_seconds=separator)
    result = packer.pack([PackRequest(index, samples, OPTIONS) for index, samples in enumerate(clips)])
    texts = []
    for index, samples in enumerate(clips):
        if index in result.transcripts:
            texts.append(result.transcripts[index].text)
        else:  # the scheduler decodes a fallback alone: part of packing's cost
            texts.append(engine.transcribe(PcmAudio(samples), OPTIONS).text)
    stats.update(windows=result.windows, fallback=dict(result.fallback), split=result.split_segments)
    return texts


def _count_encoder_passes(engine: WhisperEngine) -> dict[str, int]:
    """Count ``WhisperModel.encode`` calls (one per 30 s window Whisper encodes, re-seeks included)."""
    counter = {"passes": 0}
    encode = engine.model.encode

    def counted(*args: object, **kwargs: object) -> object:
        counter["passes"] += 1
        return encode(*args, **kwargs)

    engine.model.encode = counted
    return counter


def _timed(run: Callable[[], list[str]]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    texts = run()
    return time.perf_counter() - started, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beams", default="5,1")
    parser.add_argument("--separators", default="0.3,0.5,1.0,1.5")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    settings = load_settings()
    paths = {c.manifest.name: c.path for c in build_bundled(settings.model_cache_dir, progress=False)}
    clips = _clips(Path(os.environ.get("TMPDIR", "/tmp")) / "hark-bench-packing")
    audio_seconds = sum(samples.size for samples in clips) / SAMPLE_RATE
    lengths = sorted(samples.size / SAMPLE_RATE for samples in clips)
    reference = " ".join(SENTENCES)
    cores = os.cpu_count() or 1
    plan = DevicePlan(device="cpu", compute_type="int8", lanes=1, cpu_threads=cores)
    load_before = os.getloadavg()
    print(f"{len(clips)} clips, {lengths[0]:.1f}-{lengths[-1]:.1f} s, {audio_seconds:.1f} s of audio; "
          f"load {load_before[0]:.2f}")  # fmt: skip

    rows, sweep = [], []
    for beam in [int(b) for b in args.beams.split(",")]:
        engine = WhisperEngine(paths["whisper-tiny-en"], plan, languages=["en"], multilingual=False, beam_size=beam)
        engine.warm_up()
        encoder = _count_encoder_passes(engine)
        passes: dict[str, int] = {}
        best: dict[str, float] = {}
        texts: dict[str, list[str]] = {}
        stats: dict = {}
        sides = {
            "direct": lambda e=engine: _direct(e, clips),
            "solo": lambda e=engine: _solo(e, clips),
            "packed": lambda e=engine, d=stats: _packed(e, clips, SEPARATOR_SECONDS, d),
        }
        for round_number in range(args.rounds):
            for side, run in sides.items():
                before = encoder["passes"]
                took, texts[side] = _timed(run)
                passes[side] = encoder["passes"] - before
                best[side] = min(best.get(side, took), took)
                print(f"beam {beam} round {round_number + 1} {side}: {took:.2f} s "
                      f"({audio_seconds / took:.2f} audio s / s)")  # fmt: skip
        rate = {side: audio_seconds / took for side, took in best.items()}
        errors = {side: wer(reference, " ".join(texts[side])) for side in sides}
        stats["passes"] = passes
        rows.append((beam, rate, errors, stats))
        print(f"beam {beam}: packed/solo {rate['packed'] / rate['solo']:.2f}x, packed/direct "
              f"{rate['packed'] / rate['direct']:.2f}x; WER direct {errors['direct']:.3f} solo {errors['solo']:.3f} "
              f"packed {errors['packed']:.3f}; {stats}")  # fmt: skip
        if beam == 5:
            for separator in [float(s) for s in args.separators.split(",")]:
                swept: dict = {}
                took, packed = _timed(lambda e=engine, s=separator, d=swept: _packed(e, clips, s, d))
                sweep.append((separator, audio_seconds / took, wer(reference, " ".join(packed)), swept))
                print(f"separator {separator}: {audio_seconds / took:.2f} audio s / s, WER "
                      f"{sweep[-1][2]:.3f}; {swept}")  # fmt: skip
        del engine
    load_after = os.getloadavg()
    print(f"load {load_after[0]:.2f}")
    if not args.no_write:
        update_benchmarks("Window packing", _markdown(rows, sweep, lengths, audio_seconds, cores, args.rounds,
                                                      (load_before[0], load_after[0])))  # fmt: skip


def _markdown(rows: list, sweep: list, lengths: list[float], audio_seconds: float, cores: int, rounds: int,
              load: tuple[float, float]) -> str:  # fmt: skip
    lines = [
        f"`python bench/packing.py` — {platform.machine()}, {cores} cores (shared VM, load average "
        f"{load[0]:.1f} before, {load[1]:.1f} after), whisper-tiny-en int8 on CPU, one lane × {cores} threads, "
        f"{len(lengths)} espeak-ng clips of {lengths[0]:.1f}-{lengths[-1]:.1f} s ({audio_seconds:.0f} s of audio), "
        f"requests in English without word timestamps. Best of {rounds} interleaved rounds per side; "
        "*direct* is a plain sequential `WhisperModel.transcribe` loop, *solo* Hark's engine one request at a "
        "time, *packed* `WindowPacker` over all 20 (HARK_PACKING_MAX_SECONDS=10, separator "
        f"{SEPARATOR_SECONDS:g} s) plus the solo decodes of its fallbacks.",
        "",
        "| beam | direct audio s/s | solo audio s/s | packed audio s/s | packed / solo | packed / direct "
        "| WER direct | WER solo | WER packed | windows | encoder passes solo / packed | fallbacks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for beam, rate, errors, stats in rows:
        fallback = describe_fallbacks(stats["fallback"])
        lines.append(
            f"| {beam} | {rate['direct']:.2f} | {rate['solo']:.2f} | {rate['packed']:.2f} | "
            f"{rate['packed'] / rate['solo']:.2f}× | {rate['packed'] / rate['direct']:.2f}× | "
            f"{100 * errors['direct']:.1f} % | {100 * errors['solo']:.1f} % | {100 * errors['packed']:.1f} % | "
            f"{stats['windows']} | {stats['passes']['solo']} / {stats['passes']['packed']} | {fallback} |"
        )
    lines += [
        "",
        "Packing shares the encoder pass (one per window, plus Whisper's re-seeks inside a window, instead of "
        "one per request; the packed count includes the fallbacks' solo decodes). The decoder's work (tokens × "
        "beam) is not shared, so beam 5 gains less than greedy decoding.",
    ]
    if sweep:
        lines += [
            "",
            "Separator sweep (beam 5, one pass each, not interleaved: compare windows and splits, not speed): "
            "decoded segments Whisper ran across two requests (split back by word timestamps), requests sent "
            "to solo, WER of the whole set.",
            "",
            "| separator | windows | split segments | fallbacks | WER |",
            "|---:|---:|---:|---|---:|",
        ]
        for separator, _rate, error, stats in sweep:
            fallback = describe_fallbacks(stats["fallback"])
            lines.append(f"| {separator:g} s | {stats['windows']} | {stats['split']} | {fallback} | "
                         f"{100 * error:.1f} % |")  # fmt: skip
    return "\n".join(lines)


def describe_fallbacks(fallback: dict) -> str:
    """``none`` or the count with each request's clip number and reason: ``1 (clip 19: alone in its window)``."""
    if not fallback:
        return "none"
    return f"{len(fallback)} (" + "; ".join(f"clip {key}: {reason}" for key, reason in fallback.items()) + ")"


if __name__ == "__main__":
    main()
