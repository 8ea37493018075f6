"""hark.autoscale: the in-host capacity rule and the HPA replica rule (pure logic)."""

from __future__ import annotations

import pytest

from hark.autoscale import CapacityLimits, PodAutoscaler, next_capacity

LIMITS = CapacityLimits(floor=4, budget=64, idle_seconds=30.0)


@pytest.mark.parametrize(
    ("queue_depth", "in_flight", "current", "quiet", "expected", "why"),
    [
        (0, 0, 4, 0.0, 4, "idle at the floor stays there"),
        (10, 4, 4, 0.0, 14, "jobs waiting and every unit used: room for all of them at once"),
        (500, 64, 64, 0.0, 64, "never above the budget"),
        (100, 4, 4, 0.0, 64, "a big backlog jumps straight to the budget"),
        (3, 2, 4, 0.0, 4, "jobs waiting but capacity free: the consumer takes them, no change"),
        (0, 4, 20, 29.9, 20, "quiet, but not for the idle period yet"),
        (0, 4, 20, 30.0, 12, "quiet long enough: half of the unused capacity goes"),
        (0, 0, 5, 30.0, 4, "the last step lands on the floor"),
        (0, 10, 20, 30.0, 15, "never below what is held"),
        (0, 20, 20, 99.0, 20, "all used, nothing waiting: hold"),
        (0, 0, 1, 99.0, 4, "a capacity below the floor is brought up to it"),
    ],
)
def test_next_capacity(queue_depth: int, in_flight: int, current: int, quiet: float, expected: int, why: str) -> None:
    got = next_capacity(queue_depth=queue_depth, in_flight=in_flight, current=current, limits=LIMITS,
                        quiet_seconds=quiet)  # fmt: skip
    assert got == expected, why


def test_scaling_down_takes_several_quiet_periods() -> None:
    capacity, steps = 64, []
    while capacity > LIMITS.floor:
        capacity = next_capacity(queue_depth=0, in_flight=0, current=capacity, limits=LIMITS, quiet_seconds=30.0)
        steps.append(capacity)
    assert steps == [34, 19, 11, 7, 5, 4]  # six quiet periods from the budget to the floor


def test_limits_clamp_a_floor_above_a_small_budget() -> None:
    limits = CapacityLimits.clamped(floor=4, budget=2, idle_seconds=1.0)
    assert (limits.floor, limits.budget) == (2, 2)
    assert CapacityLimits.clamped(floor=0, budget=48, idle_seconds=1.0).floor == 1


def test_hpa_scales_up_at_once_and_down_only_after_the_window() -> None:
    hpa = PodAutoscaler(target=5, min_replicas=1, max_replicas=10, scale_down_window=300,
                        scale_up_pods_per_30s=100, scale_down_pods_per_minute=100)  # fmt: skip
    assert hpa.step(0, total_active=4, current=1) == 1
    assert hpa.step(15, total_active=23, current=1) == 5  # ceil(23 / 5)
    assert hpa.step(30, total_active=200, current=5) == 10  # max replicas
    assert hpa.step(45, total_active=2, current=10) == 10  # the window remembers 10
    assert hpa.step(329, total_active=2, current=10) == 10  # 299 s after the recommendation of 10
    assert hpa.step(331, total_active=2, current=10) == 1  # 301 s after: only low recommendations are left


def test_hpa_rate_policies_of_the_chart() -> None:
    hpa = PodAutoscaler(target=5, max_replicas=20, scale_down_window=0)  # 4 pods per 30 s up, 1 per minute down
    assert hpa.step(0, total_active=100, current=1) == 5
    assert hpa.step(15, total_active=100, current=5) == 5  # 4 added within the last 30 s already
    assert hpa.step(30, total_active=100, current=5) == 9
    assert hpa.step(100, total_active=0, current=9) == 8
    assert hpa.step(130, total_active=0, current=8) == 8  # one removed within the last minute
    assert hpa.step(160, total_active=0, current=8) == 7


def test_hpa_tolerance_keeps_replicas_near_the_target() -> None:
    hpa = PodAutoscaler(target=5)
    assert hpa.desired(total_active=21, current=4) == 4  # 5.25 per pod: within 10 %
    assert hpa.desired(total_active=23, current=4) == 5  # 5.75 per pod: out of tolerance
