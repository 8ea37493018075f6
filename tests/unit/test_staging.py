"""hark.staging: the per-deployment staged-audio byte budget, on the session's real Redis (Lua)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from hark.jobs import JobStore
from hark.staging import StagingBudget, StagingFull


def test_reserve_and_release_account_bytes(redis_client: redis.Redis, deployment: str) -> None:
    budget = StagingBudget(redis_client, deployment, budget=1000)
    assert budget.reserve("a", 400, ttl=60) == 400
    assert budget.reserve("b", 600, ttl=60) == 1000
    with pytest.raises(StagingFull) as refused:
        budget.reserve("c", 1, ttl=60)
    assert refused.value.staged == 1000 and refused.value.budget == 1000
    budget.release("a")
    assert budget.staged_bytes() == 600
    budget.release("a")
    assert budget.staged_bytes() == 600, "a second release gives nothing back"
    assert budget.reserve("c", 400, ttl=60) == 1000


def test_a_body_larger_than_the_budget_is_refused_and_nothing_is_kept(redis_client: redis.Redis,
                                                                      deployment: str) -> None:  # fmt: skip
    budget = StagingBudget(redis_client, deployment, budget=100)
    with pytest.raises(StagingFull):
        budget.reserve("big", 101, ttl=60)
    assert budget.staged_bytes() == 0


def test_expired_audio_gives_its_bytes_back(redis_client: redis.Redis, deployment: str) -> None:
    """Audio no worker ever took expires with its TTL; the next reservation purges its accounting."""
    budget = StagingBudget(redis_client, deployment, budget=1000)
    budget.reserve("stale", 900, ttl=1)
    with pytest.raises(StagingFull):
        budget.reserve("new", 200, ttl=60)
    time.sleep(1.2)
    assert budget.reserve("new", 200, ttl=60) == 200


def test_concurrent_reservations_never_pass_the_budget(redis_client: redis.Redis, deployment: str) -> None:
    budget = StagingBudget(redis_client, deployment, budget=10_000)
    accepted: list[str] = []
    lock = threading.Lock()

    def stage(index: int) -> None:
        try:
            StagingBudget(redis_client, deployment, budget=10_000).reserve(f"k{index}", 1000, ttl=60)
        except StagingFull:
            return
        with lock:
            accepted.append(f"k{index}")

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(accepted) == 10 and budget.staged_bytes() == 10_000


def test_release_racing_a_purge_gives_bytes_back_once(redis_client: redis.Redis, deployment: str) -> None:
    budget = StagingBudget(redis_client, deployment, budget=1000)
    budget.reserve("old", 500, ttl=1)
    time.sleep(1.2)
    budget.reserve("new", 100, ttl=60)  # purges "old"
    budget.release("old")  # the worker dropped it late: nothing more to give back
    assert budget.staged_bytes() == 100


def test_job_store_stages_within_the_budget_and_drop_releases(redis_client: redis.Redis, deployment: str) -> None:
    api = JobStore(redis_client, deployment, result_ttl=600, audio_ttl=600, audio_budget=10)
    worker = JobStore(redis_client, deployment, result_ttl=600, audio_ttl=600)  # workers pass no budget
    key = api.stage_audio("r1", b"0123456789")
    with pytest.raises(StagingFull):
        api.stage_audio("r2", b"x")
    assert redis_client.exists(api.audio_key("r2")) == 0, "refused audio is not stored"
    worker.drop_audio(key)
    assert api.staging.staged_bytes() == 0
    api.stage_audio("r2", b"x")
