"""``hark scale-sim``: replay an arrival trace through the packs' scaling rules and plot what they do.

    hark scale-sim bench/traces/spike.csv --config bench/traces/spike.yaml --out docs/scale-sim.png

The trace is a CSV with columns ``t_seconds,pack,arrivals`` (jobs arriving at that second; seconds not
listed have none). Each pack runs alone, exactly as deployments do: its own queue, its own pods, each pod
with the in-host capacity rule (:func:`hark.autoscale.next_capacity`, the function the workers run) and
``lanes`` inference lanes taking ``service_seconds`` per job, and the HPA rule on the pods' active
requests (:class:`hark.autoscale.PodAutoscaler`, the Helm values' target 5 and 300 s window). The output
is a table per pack and, with ``--out``, a PNG of pods and capacity, queue depth and queue wait over time.

The YAML config holds ``defaults:`` and per-pack overrides under ``packs: {<name>: {...}}`` with the keys
of :class:`PackModel`.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import deque
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from hark.autoscale import (
    HPA_SCALE_DOWN_PODS_PER_MINUTE,
    HPA_SCALE_DOWN_WINDOW_SECONDS,
    HPA_SCALE_UP_PODS_PER_30S,
    HPA_TARGET_ACTIVE_PER_POD,
    CapacityLimits,
    PodAutoscaler,
    next_capacity,
)
from hark.settings import SLOTS_BY_CHECKPOINT_COUNT


@dataclass(frozen=True)
class PackModel:
    """How one pack is simulated (defaults: Hark's and the Helm chart's)."""

    service_seconds: float = 1.5
    """Lane time per job."""
    lanes: int = 2
    """Inference lanes per pod (HARK_ENGINE_WORKERS; 2 on CPU)."""
    floor: int = 4
    """HARK_AUTOSCALE_MIN."""
    budget: int = SLOTS_BY_CHECKPOINT_COUNT[1]
    """The checkpoint's slot budget."""
    idle_seconds: float = 30.0
    """HARK_AUTOSCALE_IDLE_SECONDS."""
    target: float = HPA_TARGET_ACTIVE_PER_POD
    """packs[].autoscaling target average of hark_worker_active_requests per pod."""
    scale_down_window: float = HPA_SCALE_DOWN_WINDOW_SECONDS
    scale_up_pods_per_30s: int = HPA_SCALE_UP_PODS_PER_30S
    scale_down_pods_per_minute: int = HPA_SCALE_DOWN_PODS_PER_MINUTE
    min_replicas: int = 1
    max_replicas: int = 10
    hpa_period_seconds: float = 15.0
    """How often the HPA evaluates (kube-controller-manager's sync period)."""
    pod_start_seconds: float = 20.0
    """From the HPA's decision to a new pod taking jobs (schedule, start, load the model)."""


@dataclass
class _Pod:
    capacity: int
    ready_at: float
    quiet_since: float
    lanes: list[float]  # when each lane is free again
    held: deque[float] = field(default_factory=deque)  # arrival times of jobs held, not yet on a lane
    now: float = 0.0

    @property
    def active(self) -> int:
        """Jobs this pod holds (waiting for a lane or running): hark_worker_active_requests."""
        return len(self.held) + sum(1 for free_at in self.lanes if free_at > self.now)

    def run_lanes(self, now: float, service_seconds: float) -> list[float]:
        """Start held jobs on lanes that free up within this second; the waits of those started."""
        waits = []
        for index, free_at in enumerate(self.lanes):
            while self.held and free_at < now + 1:
                start = max(float(now), free_at)
                waits.append(start - self.held.popleft())
                free_at = start + service_seconds
            self.lanes[index] = free_at
        return waits


@dataclass
class PackSeries:
    """What one pack did, second by second."""

    pods: list[int] = field(default_factory=list)
    capacity: list[int] = field(default_factory=list)
    queue_depth: list[int] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)
    """Mean wait (arrival to a lane) of the jobs started in that second; NaN when none started."""
    waits: list[float] = field(default_factory=list)
    """Every job's wait, in start order."""

    def summary(self) -> dict[str, float]:
        waits = sorted(self.waits) or [0.0]
        return {
            "jobs": len(self.waits), "max_pods": max(self.pods, default=0),
            "max_capacity": max(self.capacity, default=0), "max_queue": max(self.queue_depth, default=0),
            "wait_p50": waits[len(waits) // 2],
            "wait_p95": waits[min(len(waits) - 1, math.ceil(0.95 * len(waits)) - 1)], "wait_max": waits[-1],
        }  # fmt: skip


def read_trace(path: Path) -> dict[str, dict[int, int]]:
    """``pack -> {second: arrivals}`` from a ``t_seconds,pack,arrivals`` CSV.

    Raises:
        ValueError: A column is missing or a value is not a number (the message names the line).
    """
    trace: dict[str, dict[int, int]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"t_seconds", "pack", "arrivals"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))} (need t_seconds,pack,arrivals)")
        for line, row in enumerate(reader, start=2):
            try:
                second, arrivals = int(float(row["t_seconds"])), int(row["arrivals"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: t_seconds and arrivals must be numbers (got {row})") from None
            if second < 0 or arrivals < 0:
                raise ValueError(f"{path}:{line}: t_seconds and arrivals must not be negative")
            per_pack = trace.setdefault(row["pack"].strip(), {})
            per_pack[second] = per_pack.get(second, 0) + arrivals
    return trace


def read_config(path: Path | None, packs: list[str]) -> dict[str, PackModel]:
    """Each pack's :class:`PackModel` from the YAML config (``defaults`` + ``packs.<name>``).

    Raises:
        ValueError: An unknown key or a value of the wrong type.
    """
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path else {}
    raw = raw or {}
    known = {f.name for f in fields(PackModel)}

    def apply(model: PackModel, values: dict[str, object], where: str) -> PackModel:
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        try:
            return replace(model, **{k: type(getattr(model, k))(v) for k, v in values.items()})  # type: ignore[arg-type]
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None

    base = apply(PackModel(), raw.get("defaults") or {}, "defaults")
    overrides = raw.get("packs") or {}
    return {pack: apply(base, overrides.get(pack) or {}, f"packs.{pack}") for pack in packs}


def simulate_pack(arrivals: dict[int, int], model: PackModel, duration: int) -> PackSeries:
    """Run one pack for `duration` seconds (one-second steps)."""
    limits = CapacityLimits.clamped(model.floor, model.budget, model.idle_seconds)
    hpa = PodAutoscaler(target=model.target, min_replicas=model.min_replicas, max_replicas=model.max_replicas,
                        scale_down_window=model.scale_down_window, scale_up_pods_per_30s=model.scale_up_pods_per_30s,
                        scale_down_pods_per_minute=model.scale_down_pods_per_minute)  # fmt: skip
    pods = [_new_pod(limits, model, 0.0) for _ in range(model.min_replicas)]
    queue: deque[float] = deque()
    series = PackSeries()
    next_hpa = model.hpa_period_seconds
    for now in range(duration):
        queue.extend([float(now)] * arrivals.get(now, 0))
        started: list[float] = []
        for pod in pods:
            if pod.ready_at > now:
                continue
            pod.now = now
            while queue and pod.active < pod.capacity:
                pod.held.append(queue.popleft())
            started += pod.run_lanes(now, model.service_seconds)
            _scale_in_host(pod, len(queue), limits, now)  # what the scaler sees: the pod after this second's pull
        if now >= next_hpa:
            next_hpa += model.hpa_period_seconds
            pods = _scale_pods(pods, hpa, queue, now, limits, model)
        ready = [p for p in pods if p.ready_at <= now]
        series.pods.append(len(ready))
        series.capacity.append(sum(p.capacity for p in ready))
        series.queue_depth.append(len(queue))
        series.wait.append(statistics.fmean(started) if started else math.nan)
        series.waits.extend(started)
    return series


def _new_pod(limits: CapacityLimits, model: PackModel, now: float) -> _Pod:
    ready_at = now + model.pod_start_seconds if now else 0.0
    return _Pod(capacity=limits.floor, ready_at=ready_at, quiet_since=now, lanes=[0.0] * model.lanes, now=now)


def _scale_in_host(pod: _Pod, depth: int, limits: CapacityLimits, now: float) -> None:
    """One tick of the worker's scaler (the same bookkeeping as :class:`workers.autoscaler.PackScaler`)."""
    if depth > 0 or pod.active >= pod.capacity:
        pod.quiet_since = now
    new = next_capacity(queue_depth=depth, in_flight=pod.active, current=pod.capacity, limits=limits,
                        quiet_seconds=now - pod.quiet_since)  # fmt: skip
    if new != pod.capacity:
        pod.capacity, pod.quiet_since = new, now


def _scale_pods(pods: list[_Pod], hpa: PodAutoscaler, queue: deque[float], now: float, limits: CapacityLimits,
                model: PackModel) -> list[_Pod]:  # fmt: skip
    """One HPA evaluation: start pods (ready after ``pod_start_seconds``) or stop the least busy ones."""
    ready = [p for p in pods if p.ready_at <= now]
    active = sum(p.active for p in ready)
    wanted = hpa.step(now, active, len(pods))
    if wanted > len(pods):
        pods += [_new_pod(limits, model, now) for _ in range(wanted - len(pods))]
    elif wanted < len(pods):
        pods.sort(key=lambda p: (p.ready_at <= now, p.active))  # not-yet-ready first, then the idlest
        for pod in pods[: len(pods) - wanted]:
            queue.extendleft(reversed(pod.held))  # a stopping worker hands back what it has not started
        pods = pods[len(pods) - wanted :]
    return pods


def simulate(trace: dict[str, dict[int, int]], models: dict[str, PackModel], duration: int | None = None,
             ) -> dict[str, PackSeries]:  # fmt: skip
    """Every pack of the trace, each on its own; `duration` defaults to the last arrival + 15 minutes."""
    if duration is None:
        duration = max((max(a, default=0) for a in trace.values()), default=0) + 900
    return {pack: simulate_pack(trace[pack], models[pack], duration) for pack in sorted(trace)}


def format_table(results: dict[str, PackSeries]) -> str:
    header = "pack        jobs  max pods  max capacity  max queue  wait p50 s  wait p95 s  wait max s"
    lines = [header]
    for pack, series in results.items():
        s = series.summary()
        lines.append(f"{pack:<10} {s['jobs']:>5.0f} {s['max_pods']:>9.0f} {s['max_capacity']:>13.0f} "
                     f"{s['max_queue']:>10.0f} {s['wait_p50']:>11.1f} {s['wait_p95']:>11.1f} "
                     f"{s['wait_max']:>11.1f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hark scale-sim``; the exit status."""
    parser = argparse.ArgumentParser(prog="hark scale-sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("trace", type=Path, help="CSV with columns t_seconds,pack,arrivals")
    parser.add_argument("--config", type=Path, help="YAML: defaults and packs.<name> overrides of the pack model")
    parser.add_argument("--out", type=Path, help="write the plot to this PNG")
    parser.add_argument("--duration", type=int, help="seconds to simulate (default: last arrival + 900)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        trace = read_trace(args.trace)
        if not trace:
            raise ValueError(f"{args.trace}: no rows")
        models = read_config(args.config, sorted(trace))
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"hark scale-sim: {error}", file=sys.stderr)
        return 2
    results = simulate(trace, models, args.duration)
    print(format_table(results))
    if args.out:
        try:
            from hark.scale_sim_plot import plot

            plot(results, models, args.out, title=args.trace.name)
        except ImportError:
            print("hark scale-sim: --out needs matplotlib (pip install 'hark[sim]')", file=sys.stderr)
            return 2
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
