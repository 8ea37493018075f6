"""The scaling rules of a pack (deployment), as pure functions: one source for the workers and the simulator.

Two levels, each driven only by the pack's own numbers, so one pack's load never moves another's:

- **In-host capacity** (:func:`next_capacity`): how many messages one checkpoint's worker child may hold
  (Celery prefetch and executor admissions together), between a floor (``HARK_AUTOSCALE_MIN``) and the
  checkpoint's slot budget (128/64/48). Up fast: as soon as jobs wait in the pack's queue while every
  unit of capacity is in use, it jumps to what in-flight plus waiting needs. Down slowly: only after
  ``HARK_AUTOSCALE_IDLE_SECONDS`` of quiet, and then by half of the unused capacity per quiet period.
- **Pods** (:class:`PodAutoscaler`): the Kubernetes HPA's rule on the per-pod average of
  ``hark_worker_active_requests``: ``desired = ceil(total active / target)`` (within a 10 % tolerance),
  scale-up at once, scale-down to the highest recommendation of the last stabilisation window, both
  rate-limited by the chart's behaviour policies. The defaults are the Helm chart's ``autoscaling``
  values (target 5 per pod, window 300 s, at most 4 pods added per 30 s and 1 removed per minute).

``workers.autoscaler`` applies :func:`next_capacity` in each model child; ``hark scale-sim`` replays a trace
through both rules.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

#: Helm ``packs[].autoscaling`` defaults: target average of hark_worker_active_requests per pod ...
HPA_TARGET_ACTIVE_PER_POD = 5.0
#: ... and the scale-down stabilisation window (seconds).
HPA_SCALE_DOWN_WINDOW_SECONDS = 300.0
#: The HPA leaves replicas alone while current/target is within this of 1.0 (kube-controller-manager default).
HPA_TOLERANCE = 0.1
#: Helm behaviour policies: at most this many pods added per 30 s ...
HPA_SCALE_UP_PODS_PER_30S = 4
#: ... and removed per minute (``scaleDownPodsPerMinute``).
HPA_SCALE_DOWN_PODS_PER_MINUTE = 1


@dataclass(frozen=True)
class CapacityLimits:
    """Bounds and pace of one checkpoint's capacity.

    Attributes:
        floor: Capacity kept however quiet the pack is (at least 1, at most `budget`).
        budget: The checkpoint's slot budget (128/64/48 or ``HARK_CONCURRENCY_PER_CHECKPOINT``).
        idle_seconds: Quiet time before each step down.
    """

    floor: int
    budget: int
    idle_seconds: float

    @classmethod
    def clamped(cls, floor: int, budget: int, idle_seconds: float) -> CapacityLimits:
        """Limits with the floor brought inside ``[1, budget]`` (a floor above a small budget means "fixed")."""
        budget = max(1, budget)
        return cls(floor=min(max(1, floor), budget), budget=budget, idle_seconds=idle_seconds)


def next_capacity(*, queue_depth: int, in_flight: int, current: int, limits: CapacityLimits,
                  quiet_seconds: float) -> int:  # fmt: skip
    """The capacity one checkpoint should have now.

    Args:
        queue_depth: Messages waiting in the pack's queue of this checkpoint (all priority lists).
        in_flight: Messages this child holds now (admitted or about to be).
        current: Its capacity now.
        limits: Floor, budget and quiet period.
        quiet_seconds: Seconds since the pack was last busy (jobs waiting, or every unit in use) or the
            capacity last changed, whichever is later.

    Returns:
        The new capacity, within ``[limits.floor, limits.budget]`` and never below `in_flight`'s need.
    """
    current = min(max(current, limits.floor), limits.budget)
    if queue_depth > 0 and in_flight >= current:
        return min(limits.budget, in_flight + queue_depth)  # up fast: room for everything waiting
    if queue_depth == 0 and in_flight < current and quiet_seconds >= limits.idle_seconds:
        excess = current - max(limits.floor, in_flight)
        if excess > 0:
            return current - math.ceil(excess / 2)  # down slowly: half the unused capacity per quiet period
    return current


@dataclass
class PodAutoscaler:
    """The HPA's replica rule for one pack (a stateful wrapper: it remembers recent recommendations).

    Attributes:
        target: Target average active requests per pod.
        min_replicas: Fewest pods.
        max_replicas: Most pods.
        scale_down_window: Seconds of recommendations whose maximum is used when scaling down.
        scale_up_pods_per_30s: Most pods added within any 30 s.
        scale_down_pods_per_minute: Most pods removed within any 60 s.
    """

    target: float = HPA_TARGET_ACTIVE_PER_POD
    min_replicas: int = 1
    max_replicas: int = 10
    scale_down_window: float = HPA_SCALE_DOWN_WINDOW_SECONDS
    scale_up_pods_per_30s: int = HPA_SCALE_UP_PODS_PER_30S
    scale_down_pods_per_minute: int = HPA_SCALE_DOWN_PODS_PER_MINUTE
    _history: deque[tuple[float, int]] = field(default_factory=deque, repr=False)
    _changes: list[tuple[float, int]] = field(default_factory=list, repr=False)

    def desired(self, total_active: float, current: int) -> int:
        """The raw HPA recommendation for `total_active` requests on `current` pods (no stabilisation)."""
        current = max(1, current)
        ratio = (total_active / current) / self.target
        if abs(ratio - 1.0) <= HPA_TOLERANCE:
            return self._bound(current)
        return self._bound(math.ceil(total_active / self.target))

    def step(self, now: float, total_active: float, current: int) -> int:
        """Replicas after one evaluation at time `now` (seconds): up at once, down to the window's maximum,
        each within its rate policy."""
        recommendation = self.desired(total_active, current)
        self._history.append((now, recommendation))
        while self._history and now - self._history[0][0] > self.scale_down_window:
            self._history.popleft()
        wanted = recommendation if recommendation >= current else min(current, max(r for _, r in self._history))
        self._changes = [(t, d) for t, d in self._changes if now - t < 60]
        if wanted > current:
            added = sum(d for t, d in self._changes if d > 0 and now - t < 30)
            wanted = min(wanted, current + max(0, self.scale_up_pods_per_30s - added))
        elif wanted < current:
            removed = -sum(d for _, d in self._changes if d < 0)
            wanted = max(wanted, current - max(0, self.scale_down_pods_per_minute - removed))
        if wanted != current:
            self._changes.append((now, wanted - current))
        return wanted

    def _bound(self, replicas: int) -> int:
        return min(self.max_replicas, max(self.min_replicas, replicas))
