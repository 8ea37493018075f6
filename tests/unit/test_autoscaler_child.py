"""The model child's autoscaling wiring: HARK_AUTOSCALE on/off, the limits it derives, capacity in the registry."""

from __future__ import annotations

import time

import pytest
import redis

from hark.registry import live_instances
from hark.schemas import CheckpointInfo, InstanceRecord
from hark.settings import ConfigError, load_settings
from tests.unit.test_workers_executor import FakeEngine
from workers.child import Heartbeat, _make_scaler
from workers.executor import CheckpointExecutor, SlotsExhausted


def test_off_keeps_the_full_budget(redis_client: redis.Redis, deployment: str) -> None:
    settings = load_settings(HARK_DEPLOYMENT=deployment)
    assert settings.autoscale == "off"
    with CheckpointExecutor(FakeEngine(), slots=8, lanes=1) as executor:
        assert _make_scaler(settings, redis_client, "whisper-tiny-en", executor) is None
        assert executor.capacity == 8


def test_on_starts_at_the_floor_and_announces_its_capacity(redis_client: redis.Redis, deployment: str) -> None:
    settings = load_settings(HARK_DEPLOYMENT=deployment, HARK_AUTOSCALE="true", HARK_AUTOSCALE_MIN=3,
                             HARK_AUTOSCALE_IDLE_SECONDS=5)  # fmt: skip
    with CheckpointExecutor(FakeEngine(), slots=8, lanes=1) as executor:
        scaler = _make_scaler(settings, redis_client, "whisper-tiny-en", executor)
        assert scaler is not None
        assert (scaler.limits.floor, scaler.limits.budget, scaler.limits.idle_seconds) == (3, 8, 5.0)
        assert scaler.capacity == executor.capacity == 3
        # The admission limit follows the capacity, not the budget.
        with executor.admit(), executor.admit(), executor.admit(), pytest.raises(SlotsExhausted), executor.admit():
            pass
        now = time.time()
        info = CheckpointInfo(name="whisper-tiny-en", version="1.0.0", languages=["en"], multilingual=False)
        record = InstanceRecord(deployment=deployment, worker_id="w1", host="h", pid=1, queue="q", checkpoint=info,
                                slots=executor.slots, started_at=now, heartbeat_at=now)  # fmt: skip
        Heartbeat(redis_client, record, settings, lambda: executor.in_flight,
                  capacity=lambda: scaler.capacity).beat()  # fmt: skip
        [live] = live_instances(redis_client, deployment)
        assert (live.slots, live.capacity) == (8, 3)


def test_a_bad_autoscale_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="HARK_AUTOSCALE"):
        load_settings(HARK_AUTOSCALE="sometimes")
