"""Throughput and tail latency under load: direct faster-whisper, Hark deployments and a peer server.

    .venv/bin/python bench/throughput.py [--levels 1,8,32] [--beam 5] [--side NAME:KEY=VAL,...]
        [--hark-env KEY=VAL] [--peer-grid 1x2,2x1] [--rss-requests 1000] [--quick] [--no-write]

Sides, measured in one run and interleaved level by level (each level runs every side, in an order
rotated per level, so drift of the shared machine hits all of them alike):

- **direct-seq**: a plain sequential loop of in-process ``WhisperModel.transcribe`` calls on the same
  weights with Hark's options (int8, language en, the beam, Silero VAD, no word timestamps), one
  model with all the cores. Every ratio is to this side at the same level and workload.
- **direct-best**: the best of a small grid of ``num_workers × cpu_threads × callers`` (``--direct-grid``),
  picked by a probe over the short clips before the levels start.
- **Hark sides**: each a real deployment (private Redis, ``hark worker``, API) with its own settings:
  ``--side hark-current`` (the default: today's settings), ``--side batching:HARK_X=1,HARK_Y=4``...
  ``--hark-env`` applies to every Hark side (e.g. a setting the scheduler work adds).
- **peer**: faster-whisper-server 0.0.3 from its own venv (``--peer-venv``) on the same model dir, best
  of ``--peer-grid`` (uvicorn processes × cpu_threads) by the same probe; called with the ``openai``
  client. ``--no-peer`` leaves it out, ``--peer-cmd`` overrides its command line.

Workloads: the 20 short clips (2.8-6.5 s) at every level of closed-loop clients (``--levels``), sent at
least ``--min-requests`` times and twice per client; the 60 s file and the mix (short clips with two
60 s files among them) at ``--long-level``. Per side and level: throughput (audio s / wall s) and its
ratio to direct-seq, p50/p95 latency and p95/p50, WER (jiwer, corpus), errors, and the RSS of the
serving processes at the start and the end. ``--rss-requests N`` then sends N short clips through each
server side (8 clients) and reports the RSS drift. The 1-minute load average is printed per level.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_benchmarks  # noqa: E402
from bench.throughput_audio import cache_dir, long_clip, mix, short_clips  # noqa: E402
from bench.throughput_load import (  # noqa: E402
    Clip,
    Summary,
    closed_loop,
    parse_grid,
    parse_side,
    request_list,
    split_rounds,
    summarize,
)
from bench.throughput_sides import DirectSide, HarkSide, PeerSide  # noqa: E402
from tests.audio import AudioFactory  # noqa: E402

SECTION = "Throughput under load"
DEFAULT_PEER_VENV = Path("/work/peer-venv")
RSS_CLIENTS = 8


def log(message: str) -> None:
    print(f"[throughput {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}", flush=True)


class Tally:
    """One side's rounds of one level, pooled: outcomes, wall and CPU time, RSS at the first start and last end."""

    def __init__(self, side: object) -> None:
        self.side = side
        self.outcomes: list = []
        self.wall = 0.0
        self.cpu: float | None = 0.0
        self.rss_start: float | None = None
        self.rss_end: float | None = None
        self.rounds = 0

    def run(self, clips: list[Clip], level: int, deadline: float) -> None:
        side = self.side
        if not self.rounds:
            self.rss_start = side.rss_mb()  # type: ignore[attr-defined]
        cpu = side.cpu_seconds()  # type: ignore[attr-defined]
        outcomes, wall = closed_loop(side.transcribe, clips, side.clients_for(level), deadline)  # type: ignore[attr-defined]
        after = side.cpu_seconds()  # type: ignore[attr-defined]
        self.cpu = None if cpu is None or after is None or self.cpu is None else self.cpu + after - cpu
        self.outcomes += outcomes
        self.wall += wall
        self.rss_end = side.rss_mb()  # type: ignore[attr-defined]
        self.rounds += 1

    def summary(self, workload: str, level: int) -> Summary:
        summary = summarize(self.side.name, workload, level, self.outcomes, self.wall)  # type: ignore[attr-defined]
        summary.rss_start_mb, summary.rss_end_mb, summary.cpu_seconds = self.rss_start, self.rss_end, self.cpu
        log(f"{workload} ×{level} {summary.side}: {summary.throughput:.2f} audio s/s, p50 {summary.p50:.2f} s, "
            f"p95 {summary.p95:.2f} s, WER {summary.wer * 100:.1f} %, CPU/audio {summary.cpu_per_audio:.3f}, "
            f"errors {summary.errors}" + (f" {summary.error_kinds}" if summary.errors else ""))  # fmt: skip
        return summary


def measure(side: object, workload: str, clips: list[Clip], level: int, deadline: float) -> Summary:
    """One side over `clips` with its share of `level` clients, in one round."""
    tally = Tally(side)
    tally.run(clips, level, deadline)
    return tally.summary(workload, level)


def measure_level(sides: list, workload: str, requests_: list[Clip], level: int, args: argparse.Namespace,
                  turn: int) -> list[Summary]:  # fmt: skip
    """Every side over `requests_`, cut into rounds; each round runs every side, in an order rotated per round."""
    tallies = {id(side): Tally(side) for side in sides}
    for index, chunk in enumerate(split_rounds(requests_, args.rounds, level)):
        shift = (turn + index) % len(sides)
        for side in sides[shift:] + sides[:shift]:
            tallies[id(side)].run(chunk, level, args.level_deadline)
    return [tallies[id(side)].summary(workload, level) for side in sides]


def probe(candidates: list, clips: list[Clip], level_of: dict[str, int], deadline: float) -> tuple[object, list[str]]:
    """Measure each candidate once over `clips`; keep the fastest, stop the rest. Returns it and the notes."""
    if len(candidates) == 1:
        return candidates[0], [f"{candidates[0].name} ({candidates[0].description}): the only candidate"]
    notes, best, best_rate = [], None, -1.0
    for side in candidates:
        summary = measure(side, "probe", clips, level_of[side.name], deadline)
        rate = summary.throughput if summary.errors == 0 else 0.0
        notes.append(f"{side.name} ({side.description}): {summary.throughput:.2f} audio s/s, {summary.errors} errors")
        if rate > best_rate:
            if best is not None:
                best.stop()
            best, best_rate = side, rate
        else:
            side.stop()
    return best, notes


def peer_versions(venv: Path) -> str:
    """Engine versions inside the peer's venv, as it reports them."""
    code = ("import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
            "('faster-whisper-server', 'faster-whisper', 'ctranslate2', 'onnxruntime')))")  # fmt: skip
    try:
        return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                              timeout=60, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({error})"


def start_sides(args: argparse.Namespace, model_dir: Path, clips: list[Clip], workdir: Path,
                notes: list[str]) -> list:  # fmt: skip
    """direct-seq, the best direct configuration, every Hark side and the best peer (all warmed up)."""
    cores = os.cpu_count() or 1
    sides: list = []
    try:
        sequential = DirectSide("direct-seq", model_dir, 1, cores, 1, args.beam)
        sequential.transcribe(clips[0])
        sides.append(sequential)
        grid = [DirectSide(f"direct-{w}x{t}x{c}", model_dir, w, t, c, args.beam) for w, t, c in
                parse_grid(args.direct_grid)]  # fmt: skip
        for side in grid:
            side.transcribe(clips[0])
        best, probe_notes = probe(grid, clips, {side.name: side.callers for side in grid}, args.level_deadline)
        best.name = "direct-best"
        sides.append(best)
        notes.append("Direct grid probe (short clips once each): " + "; ".join(probe_notes) + ".")
        base = {"HARK_BEAM_SIZE": str(args.beam),
                "HARK_MAX_CONCURRENT_PER_CLIENT": str(2 * max([*args.levels, RSS_CLIENTS, args.long_level])),
                **dict(parse_side("hark-env:" + ",".join(args.hark_env))[1])}  # fmt: skip
        for spec in args.side:
            name, env = parse_side(spec)
            log(f"starting Hark side {name}")
            side = HarkSide(name, model_dir, workdir, {**base, **env}, args.timeout)
            sides.append(side)
            closed_loop(side.transcribe, clips[:4], 4, args.level_deadline)  # warm-up
        if not args.no_peer:
            sides += start_peer(args, model_dir, clips, workdir, notes)
    except BaseException:
        for side in sides:
            side.stop()
        raise
    return sides


def start_peer(args: argparse.Namespace, model_dir: Path, clips: list[Clip], workdir: Path,
               notes: list[str]) -> list:  # fmt: skip
    """The best of the peer grid (processes × threads), or nothing when it cannot start (noted)."""
    candidates: list[PeerSide] = []
    try:
        return _start_peer(args, model_dir, clips, workdir, notes, candidates)
    except BaseException:
        for side in candidates:
            side.stop()
        raise


def _start_peer(args: argparse.Namespace, model_dir: Path, clips: list[Clip], workdir: Path, notes: list[str],
                candidates: list[PeerSide]) -> list:  # fmt: skip
    for processes, threads, _ in parse_grid(args.peer_grid):
        name = f"peer-{processes}x{threads}"
        log(f"starting {name}")
        try:
            side = PeerSide(name, model_dir, workdir, processes, threads, args.beam, args.timeout, args.peer_venv,
                            args.peer_cmd)  # fmt: skip
        except Exception as error:
            notes.append(f"Peer {name} did not start: {error}.")
            log(f"{name} did not start: {error}")
            continue
        candidates.append(side)
        closed_loop(side.transcribe, clips[: 2 * processes], 2 * processes, args.level_deadline)  # loads its models
    if not candidates:
        return []
    level = min(8, max(args.levels))
    best, probe_notes = probe(candidates, clips, {side.name: level for side in candidates}, args.level_deadline)
    notes.append(f"Peer grid probe (short clips once each, {level} clients): " + "; ".join(probe_notes) + ".")
    best.name = "peer-best"
    return [best]


def run(args: argparse.Namespace) -> tuple[list[Summary], list[str], list]:
    """Every workload on every side; returns the summaries, notes, and the RSS runs."""
    from checkpoints.bundled import build_bundled
    from hark.settings import load_settings

    model_dir = next(c.path for c in build_bundled(load_settings().model_cache_dir)
                     if c.manifest.name == "whisper-tiny-en")  # fmt: skip
    factory = AudioFactory(cache_dir())
    clips = short_clips(factory, args.clips)
    long = long_clip(factory)
    workdir = Path(tempfile.mkdtemp(prefix="hark-bench-throughput-"))
    notes: list[str] = [f"Load average (1/5/15 min) at the start: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}."]
    log(f"{len(clips)} clips {min(c.seconds for c in clips):.1f}-{max(c.seconds for c in clips):.1f} s, "
        f"long file {long.seconds:.1f} s; logs in {workdir}")  # fmt: skip
    sides = start_sides(args, model_dir, clips, workdir, notes)
    summaries: list[Summary] = []
    rss_runs: list = []
    try:
        workloads = [("short", level, request_list(clips, level, args.min_requests)) for level in args.levels]
        if args.long_level:
            workloads.append(("60 s", args.long_level, [long] * max(2, args.long_level)))
            workloads.append(("mix", args.long_level, mix(clips, long)))
        for turn, (workload, level, requests_) in enumerate(workloads):
            before = os.getloadavg()[0]
            summaries += measure_level(sides, workload, requests_, level, args, turn)
            notes.append(f"Load average (1 min) during {workload} ×{level}: {before:.2f} → {os.getloadavg()[0]:.2f}.")
        if args.rss_requests:
            rss_runs = rss_drift(sides, clips, args)
    finally:
        for side in sides:
            side.stop()
    notes.append("Sides: " + "; ".join(f"**{side.name}** = {side.description}" for side in sides) + ".")
    return summaries, notes, rss_runs


def rss_drift(sides: list, clips: list[Clip], args: argparse.Namespace) -> list[tuple[str, float, float, int]]:
    """Send `args.rss_requests` short clips through every server side (or those of ``--rss-sides``);
    (side, RSS start, end, errors)."""
    runs = []
    chosen = set(args.rss_sides.split(",")) if args.rss_sides else None
    for side in sides:
        if side.rss_mb() is None or (chosen is not None and side.name not in chosen):
            continue
        requests_ = (clips * (args.rss_requests // len(clips) + 1))[: args.rss_requests]
        start = side.rss_mb()
        outcomes, _wall = closed_loop(side.transcribe, requests_, RSS_CLIENTS, args.level_deadline * 4)
        end = side.rss_mb()
        errors = sum(outcome.error is not None for outcome in outcomes)
        runs.append((side.name, start or 0.0, end or 0.0, errors))
        log(f"RSS {side.name}: {start:.0f} → {end:.0f} MB over {len(requests_)} requests, {errors} errors")
    return runs


def report(summaries: list[Summary], notes: list[str], rss_runs: list, args: argparse.Namespace) -> str:
    import ctranslate2
    import faster_whisper

    peer = "" if args.no_peer else f" Peer venv: {peer_versions(args.peer_venv)}."
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs), no GPU, Python "
        f"{platform.python_version()}. Model whisper-tiny-en@1.0.0 (Whisper tiny.en, CTranslate2 int8, CPU), "
        f"beam {args.beam}, language en, Silero VAD on, no word timestamps. Hark's engine: faster-whisper "
        f"{faster_whisper.__version__}, CTranslate2 {ctranslate2.__version__}.{peer} Run "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}; `bench/throughput.py {' '.join(sys.argv[1:])}`.",
        "",
        "| workload | clients | side | requests | errors | audio s / s | × direct-seq | p50 s | p95 s | p95/p50 "
        "| WER % | CPU s / audio s | RSS MB start → end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(s.workload, s.clients): s.throughput for s in summaries if s.side == "direct-seq"}
    for s in summaries:
        ratio = s.throughput / base[(s.workload, s.clients)] if base.get((s.workload, s.clients)) else float("nan")
        rss = f"{s.rss_start_mb:.0f} → {s.rss_end_mb:.0f}" if s.rss_start_mb and s.rss_end_mb else "–"
        lines.append(
            f"| {s.workload} | {s.clients} | {s.side} | {s.requests} | {s.errors} | {s.throughput:.2f} | {ratio:.2f}× "
            f"| {s.p50:.2f} | {s.p95:.2f} | {s.tail:.2f} | {s.wer * 100:.1f} | {s.cpu_per_audio:.3f} | {rss} |"
        )
    if rss_runs:
        lines += ["", f"RSS drift over {args.rss_requests} short requests ({RSS_CLIENTS} clients):", "",
                  "| side | RSS start MB | RSS end MB | drift | errors |", "|---|---|---|---|---|"]  # fmt: skip
        for name, start, end, errors in rss_runs:
            drift = (end - start) / start * 100 if start else float("nan")
            lines.append(f"| {name} | {start:.0f} | {end:.0f} | {drift:+.1f} % | {errors} |")
    lines += ["", *targets(summaries), "", *notes, "", READING]
    if not args.no_peer:
        lines += ["", PEER_READING]
    return "\n".join(lines)


def targets(summaries: list[Summary]) -> list[str]:
    """Each Hark side against the issue's targets (tiny.en, beam 5, 2 cores), where this run measured it."""
    by = {(s.side, s.workload, s.clients): s for s in summaries}
    hark_sides = sorted({s.side for s in summaries if not s.side.startswith(("direct-", "peer-"))})
    lines = ["Against the targets (short clips; ✓ met, ✗ missed):", ""]
    for side in hark_sides:
        checks = []
        for (name, workload, clients), s in sorted(by.items(), key=lambda item: item[0][2]):
            if name != side or workload != "short":
                continue
            seq, peer = by.get(("direct-seq", workload, clients)), by.get(("peer-best", workload, clients))
            ratio = s.throughput / seq.throughput if seq and seq.throughput else float("nan")
            if clients == 1:
                checks.append(f"1 client {ratio:.2f}× direct-seq (≥ 1.0) {'✓' if ratio >= 1.0 else '✗'}")
            if clients == 32:
                checks.append(f"32 clients {ratio:.2f}× direct-seq (≥ 2.0) {'✓' if ratio >= 2.0 else '✗'}")
                if peer and peer.throughput:
                    over_peer = s.throughput / peer.throughput
                    checks.append(f"{over_peer:.2f}× peer-best (≥ 1.5) {'✓' if over_peer >= 1.5 else '✗'}")
            if clients in (8, 32):
                checks.append(f"p95/p50 at {clients} {s.tail:.2f} (≤ 1.25) {'✓' if s.tail <= 1.25 else '✗'}")
            if seq and s.wer == s.wer and seq.wer == seq.wer:
                points = (s.wer - seq.wer) * 100
                checks.append(f"WER at {clients} {points:+.1f} points (≤ 0.5) {'✓' if points <= 0.5 else '✗'}")
        lines.append(f"- **{side}**: " + ("; ".join(checks) or "no level of 1, 8 or 32 measured") + ".")
    return lines


READING = (
    "Reading the table: *clients* are closed-loop (each sends its next clip when the previous answer "
    "arrives); direct sides ignore it (direct-seq is one caller, direct-best its own callers), so their "
    "latency is the service time, and they are rerun at every level only to give each level its own "
    "baseline. *audio s / s* counts answered audio only; *× direct-seq* is against direct-seq on the same "
    "workload in the same level. Each level is cut into `--rounds` rounds (at least two requests per client "
    "each) and every round runs every side, in an order rotated per round; latencies are pooled over the "
    "rounds. *CPU s / audio s* is the CPU time of the side's serving processes (Hark: Redis, worker, API; "
    "peer: uvicorn; direct: the benchmark process) per answered audio second: the cost, which load from "
    "other jobs changes far less than it changes wall time. The RSS of Hark is its whole `hark worker` "
    "process tree, of the peer its uvicorn tree; direct sides share the benchmark's process (–). A shared "
    "2-core machine moves numbers by ±10 % between runs: compare ratios within one run."
)


PEER_READING = (
    "The peer: faster-whisper-server 0.0.3 (PyPI; FastAPI + uvicorn, OpenAI-compatible "
    "`/v1/audio/transcriptions`), installed by `bench/install_peer.sh` into its own venv with faster-whisper, "
    "CTranslate2, onnxruntime, av, tokenizers and numpy pinned to Hark's versions, serving the same local model "
    "directory offline through its YAML config (`model_options`: int8, cpu_threads, num_workers 1; "
    "`transcribe_options`: beam, VAD, language en). It decodes inside its `async` endpoint, so one uvicorn "
    "process answers one request at a time (others wait in its event loop); its parallelism is processes "
    "(`--workers`), each loading its own model, hence the `processes × threads` grid. Leave `OMP_NUM_THREADS` "
    "unset on every side: set to 1 it changed tiny.en's output here (short-clip WER 13.2 % → 18.9 %, e.g. "
    "\"quick brown fox\" → \"quick round fark\"), which would compare different decoders."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default=None, help="closed-loop clients per level (default 1,4,8,32,128)")
    parser.add_argument("--beam", type=int, default=5, help="beam size on every side (Hark: HARK_BEAM_SIZE)")
    parser.add_argument("--side", action="append", default=None,
                        help="a Hark side NAME[:KEY=VAL,...] (repeatable; default hark-current)")  # fmt: skip
    parser.add_argument("--hark-env", action="append", default=[], help="KEY=VAL for every Hark side (repeatable)")
    parser.add_argument("--direct-grid", default=None,
                        help="direct configurations WORKERSxTHREADSxCALLERS probed for direct-best "
                        "(default 2x1x2,2x1x4,2x2x2; direct-seq is 1x<cores>x1)")  # fmt: skip
    parser.add_argument("--peer-grid", default=None, help="peer PROCESSESxTHREADS probed (default 1x2,2x1)")
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV)
    parser.add_argument("--peer-cmd", default=None, help="peer command line ({venv} {config} {port} {processes})")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--clips", type=int, default=20, help="short clips used (at most 20)")
    parser.add_argument("--min-requests", type=int, default=40, help="requests per side and level, at least")
    parser.add_argument("--long-level", type=int, default=None, help="clients for the 60 s and mix workloads (0: skip)")
    parser.add_argument("--rss-requests", type=int, default=0, help="then send N requests per server side for RSS")
    parser.add_argument("--rss-sides", default="", help="comma-separated sides for --rss-requests (default: all)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds per level, each running every side (at least 2 requests per client a round)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per request")
    parser.add_argument("--level-deadline", type=float, default=900, help="seconds per side and level")
    parser.add_argument("--quick", action="store_true", help="smoke run: 6 clips, levels 1,4, small grids")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    defaults = {"levels": ("1,4,8,32,128", "1,4"), "direct_grid": ("2x1x2,2x1x4,2x2x2", "2x1x2"),
                "peer_grid": ("1x2,2x1", "1x2"), "long_level": (4, 0)}  # (full, --quick) when not given
    for option, (full, quick) in defaults.items():
        if getattr(args, option) is None:
            setattr(args, option, quick if args.quick else full)
    if args.quick:
        args.clips, args.min_requests = min(args.clips, 6), min(args.min_requests, 6)
    args.levels = [int(level) for level in args.levels.split(",") if level.strip()]
    args.side = args.side or ["hark-current"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summaries, notes, rss_runs = run(args)
    section = report(summaries, notes, rss_runs, args)
    print(section)
    if not args.no_write:
        update_benchmarks(SECTION, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
