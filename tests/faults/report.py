"""Turn the rows the fault and abuse scenarios wrote (JSON, one per scenario) into ``RELIABILITY.md``.

Usage::

    python -m tests.faults.report [ROWS_DIR] [-o RELIABILITY.md]

ROWS_DIR defaults to ``$HARK_RELIABILITY_OUT`` (``make faults`` sets it to ``build/reliability``).
Each row may carry ``outcome`` (passed/failed, recorded by the suites' conftest), so the table
says which guarantees held in the run it describes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

#: Order of the table; unknown scenarios follow, alphabetically.
ORDER = (
    "kill9", "redis_restart", "redis_restart_no_persistence", "sigterm", "webhook_trickle",
    "fuzz_schemathesis", "fuzz_query_parsing", "fuzz_query_live", "fuzz_media",
    "abuse_slow_uploads", "abuse_oversized_headers", "abuse_abandoned_sync", "abuse_per_client_limit",
    "abuse_refused_webhooks", "run_killed",
)  # fmt: skip

HEADER = """# Reliability

What the fault-and-abuse suite (`tests/faults/`, `tests/abuse/`) measured: real Redis, real `hark api`
and `hark worker` processes, the bundled `whisper-tiny-en` model, loopback only. Regenerate with
`make faults` (full scale, ~15 min on 2 cores); `make test` runs a fast version of every scenario.
"Requests lost" counts accepted requests (answered 200/202 with a request id) that never ended in a
result or an explicit error by any channel (sync answer, `GET /waves/v1/stt/jobs/<id>`, webhook); it
must be 0. p95 ratio is a well-behaved client's p95 latency under the abuse divided by its unloaded
p95, measured in the same run (limit 2x, plus 0.25 s of scheduler noise).
"""

NO_PERSISTENCE = """
**Without persistence** (`--appendonly no`, as the compose file shipped before the hardening work), a
Redis restart empties the database: queued broker messages, staged audio, job states and results, the
unacknowledged set and the deadline index. What a worker holds at that moment survives (a job already
running rewrites its state when it ends, so its client still gets an answer); everything else is gone:
requests queued but not yet taken are never answered, and results of jobs that had ended answer 404
to polling. {measured}The deploy files therefore run Redis with `appendonly yes`,
`appendfsync everysec` (at most ~1 s of writes lost on a crash of the Redis host, none on a clean
restart) and `maxmemory` + `noeviction` (Redis refuses writes instead of evicting job state; the API
answers 503 + `Retry-After`).
"""


def load_rows(directory: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(directory.glob("*.json")):
        try:
            rows.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    rank = {name: index for index, name in enumerate(ORDER)}
    return sorted(rows, key=lambda r: (rank.get(r.get("scenario", ""), len(ORDER)), r.get("scenario", "")))


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def _faults(row: dict[str, Any]) -> str:
    injected, survived = row.get("faults_injected", 0), row.get("faults_survived", 0)
    scenario = row.get("scenario", "")
    if scenario.startswith("fuzz"):
        return "-"
    detail = ""
    if scenario == "kill9":
        restarts = [k.get("restart_seconds") for k in row.get("kills", [])]
        detail = f" (child back in {_num(max(restarts, default=None), 1)} s max)" if restarts else ""
    elif scenario.startswith("redis_restart"):
        detail = f" (recovered in {', '.join(_num(s, 1) for s in row.get('recovery_seconds', []))} s)"
    elif scenario == "sigterm":
        redelivery = row.get("redelivery_seconds") or []
        times = ", ".join(_num(s, 1) for s in redelivery) or "-"
        detail = (f" (in flight {row.get('in_flight_at_sigterm')}, redelivered after {times} s, "
                  f"exit {_num(row.get('worker_exit_seconds'), 1)} s)")
    elif scenario == "webhook_trickle":
        detail = f" (attempts lasted {row.get('attempt_seconds')} s, deadline {_num(row.get('deadline_seconds'), 0)} s)"
    return f"{injected} / {survived}{detail}"


def _lost(row: dict[str, Any]) -> str:
    lost = row.get("lost", 0)
    extra = []
    if row.get("duplicate_deliveries"):
        extra.append(f"{len(row['duplicate_deliveries'])} duplicated webhooks")
    if row.get("orphaned_audio_keys"):
        extra.append(f"{len(row['orphaned_audio_keys'])} orphaned audio keys")
    if row.get("server_errors"):
        extra.append(f"{len(row['server_errors'])} answers >= 500")
    if row.get("informational"):
        extra.append("informational")
    return f"**{lost}**" + (f" ({'; '.join(extra)})" if extra else "")


def render(rows: list[dict[str, Any]]) -> str:
    lines = [HEADER]
    if rows:
        scales = sorted({str(r.get("scale")) for r in rows})
        when = dt.datetime.fromtimestamp(max(float(r.get("written_at", 0)) for r in rows), tz=dt.UTC)
        lines.append(f"Last run: {when:%Y-%m-%d %H:%M} UTC, scale `{', '.join(scales)}`.\n")
    lines.append("| scenario | load held | faults injected / survived | inputs tried | requests lost | p95 ratio "
                 "| result | reproduce |")
    lines.append("|---|---|---|---|---|---|---|---|")
    fuzz_total = 0
    for row in rows:
        scenario = row.get("scenario", "?")
        if scenario.startswith("fuzz"):
            fuzz_total += int(row.get("inputs") or 0)
        ratio = row.get("p95_ratio")
        p95 = "-"
        if ratio is not None:
            p95 = f"{_num(ratio)} ({_num(row.get('p95_loaded'))} / {_num(row.get('p95_unloaded'))} s)"
        outcome = row.get("outcome", "-")
        lines.append(f"| {row.get('title', scenario)} | {row.get('load', '-')} | {_faults(row)} "
                     f"| {row.get('inputs', '-')} | {_lost(row)} | {p95} | {outcome} | `{row.get('command', '')}` |")
    if fuzz_total:
        lines.append(f"\nFuzz cases in this run: **{fuzz_total}** (schemathesis, hypothesis on query parsing, "
                     "malformed media); any answer >= 500 or a crashed worker child fails the scenario.")
    measured = ""
    for row in rows:
        if row.get("scenario") == "redis_restart_no_persistence":
            measured = (f"Measured in one restart under light load: {row.get('lost')} of {row.get('accepted')} "
                        "accepted requests lost (each was already running on a worker when Redis restarted, "
                        "so the run shows the survivable part; the row is informational). ")
    lines.append(NO_PERSISTENCE.format(measured=measured))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", default=os.environ.get("HARK_RELIABILITY_OUT", "build/reliability"))
    parser.add_argument("-o", "--output", default="RELIABILITY.md")
    args = parser.parse_args(argv)
    rows = load_rows(Path(args.rows))
    if not rows:
        print(f"no rows in {args.rows}; run the suite first (make faults)", file=sys.stderr)
        return 1
    Path(args.output).write_text(render(rows), encoding="utf-8")
    print(f"wrote {args.output} from {len(rows)} row(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
