"""Closed-loop load and its statistics for ``bench/throughput.py`` (pure parts, no model, no server).

A level of N clients is N threads that each take the next clip of a shared list, send it, wait for the
answer and take the next, until the list is empty: the offered load follows the service (closed loop),
so throughput is the audio seconds answered over the wall time of the whole list.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Clip:
    """One request's audio (a 16 kHz mono WAV file's bytes) and the text spoken in it."""

    name: str
    audio: bytes
    seconds: float
    reference: str


@dataclass(frozen=True)
class Outcome:
    """One request: the transcript (None on error), the latency and the error's text."""

    clip: Clip
    latency: float
    text: str | None
    error: str | None = None


@dataclass
class Summary:
    """One side at one level."""

    side: str
    workload: str
    clients: int
    requests: int
    errors: int
    audio_seconds: float
    wall: float
    p50: float
    p95: float
    wer: float
    error_kinds: list[str] = field(default_factory=list)
    rss_start_mb: float | None = None
    rss_end_mb: float | None = None
    cpu_seconds: float | None = None
    """CPU time the side's serving processes spent on this level (user + system, all threads)."""

    @property
    def throughput(self) -> float:
        """Audio seconds answered per wall second."""
        return self.audio_seconds / self.wall if self.wall > 0 else 0.0

    @property
    def cpu_per_audio(self) -> float:
        """CPU seconds per answered audio second: the cost, which other jobs' load hardly moves."""
        if self.cpu_seconds is None or not self.audio_seconds:
            return float("nan")
        return self.cpu_seconds / self.audio_seconds

    @property
    def tail(self) -> float:
        """p95 over p50 latency."""
        return self.p95 / self.p50 if self.p50 > 0 else float("nan")


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (`share` in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def request_list(clips: Sequence[Clip], clients: int, minimum: int) -> list[Clip]:
    """The clips repeated in order: at least `minimum` requests and two per client, whole passes only."""
    wanted = max(minimum, 2 * clients, 1)
    passes = math.ceil(wanted / max(1, len(clips)))
    return list(clips) * passes


def split_rounds(requests: Sequence[Clip], rounds: int, clients: int) -> list[list[Clip]]:
    """`requests` cut into at most `rounds` contiguous rounds of at least two requests per client each."""
    count = max(1, min(rounds, len(requests) // max(1, 2 * clients)))
    size = math.ceil(len(requests) / count)
    return [list(requests[start:start + size]) for start in range(0, len(requests), size)]


def closed_loop(call: Callable[[Clip], str], clips: Sequence[Clip], clients: int,
                deadline_seconds: float) -> tuple[list[Outcome], float]:  # fmt: skip
    """Send every clip through `call` from `clients` threads (closed loop).

    A failing call is an outcome with its error, not an exception. Requests still running when
    `deadline_seconds` have passed are counted as errors ("level deadline") and left to finish alone.

    Returns:
        The outcomes (one per clip) and the wall time in seconds.
    """
    lock = threading.Lock()
    queue = list(reversed(clips))
    outcomes: list[Outcome] = []
    running: dict[int, Clip] = {}

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                clip = queue.pop()
                running[threading.get_ident()] = clip
            started = time.perf_counter()
            try:
                text, error = call(clip), None
            except Exception as exc:  # counted, never fatal
                text, error = None, f"{type(exc).__name__}: {str(exc)[:120]}"
            with lock:
                outcomes.append(Outcome(clip, time.perf_counter() - started, text, error))
                running.pop(threading.get_ident(), None)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(max(1, clients))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    end = started + deadline_seconds
    for thread in threads:
        thread.join(max(0.0, end - time.perf_counter()))
    wall = time.perf_counter() - started
    with lock:
        done = list(outcomes)
        unfinished = list(running.values()) + list(queue)
        queue.clear()
    return done + [Outcome(clip, wall, None, "level deadline") for clip in unfinished], wall


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (jiwer) after normalisation (lowercase, no punctuation); NaN when nothing to score."""
    import jiwer

    pairs = [(normalize(ref), normalize(hyp)) for ref, hyp in zip(references, hypotheses, strict=True)]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref]
    if not pairs:
        return float("nan")
    return float(jiwer.wer([ref for ref, _ in pairs], [hyp for _, hyp in pairs]))


_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")  # fmt: skip
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(value: int) -> str:
    """0-99 in words ("twenty one"), as the references spell what Whisper writes in digits."""
    if value < 20:
        return _UNITS[value]
    tens, units = divmod(value, 10)
    return _TENS[tens - 2] + (f" {_UNITS[units]}" if units else "")


def normalize(text: str) -> str:
    """Lowercase, punctuation removed (apostrophes kept), numbers below 100 in words, single spaces."""
    import re

    text = re.sub(r"[^\w' ]+", " ", text.lower())
    text = re.sub(r"\b\d{1,2}\b", lambda match: number_words(int(match.group())), text)
    return re.sub(r"\s+", " ", text).strip()


def summarize(side: str, workload: str, clients: int, outcomes: Sequence[Outcome], wall: float) -> Summary:
    """Throughput, latency percentiles and WER of one side's outcomes (errors excluded from all three)."""
    good = [outcome for outcome in outcomes if outcome.error is None]
    bad = [outcome for outcome in outcomes if outcome.error is not None]
    latencies = [outcome.latency for outcome in good]
    kinds = sorted({outcome.error or "" for outcome in bad})
    return Summary(
        side=side, workload=workload, clients=clients, requests=len(outcomes), errors=len(bad),
        audio_seconds=sum(outcome.clip.seconds for outcome in good), wall=wall,
        p50=percentile(latencies, 0.50), p95=percentile(latencies, 0.95),
        wer=word_error_rate([o.clip.reference for o in good], [o.text or "" for o in good]),
        error_kinds=kinds[:3],
    )  # fmt: skip


def parse_side(spec: str) -> tuple[str, dict[str, str]]:
    """``name:KEY=VAL,KEY=VAL`` (or just ``name``) → the name and its environment.

    Raises:
        ValueError: No name, or a pair without ``=``.
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"a side needs a name: {spec!r}")
    env: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"expected KEY=VALUE in side {name!r}, got {pair!r}")
        env[key.strip()] = value.strip()
    return name, env


def parse_grid(spec: str) -> list[tuple[int, int, int]]:
    """``WxTxC,...`` (num_workers × cpu_threads × callers) → tuples; ``WxT`` means C = W.

    Raises:
        ValueError: A malformed or non-positive entry.
    """
    grid = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        numbers = [int(number) for number in item.lower().split("x")]
        if len(numbers) == 2:
            numbers.append(numbers[0])
        if len(numbers) != 3 or min(numbers) < 1:
            raise ValueError(f"grid entries are WORKERSxTHREADS[xCALLERS], all >= 1; got {item!r}")
        grid.append((numbers[0], numbers[1], numbers[2]))
    return grid
