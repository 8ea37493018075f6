"""``hark api`` start-up check: are this deployment's workers there, and do they serve what is expected?

A wrong ``HARK_DEPLOYMENT`` (a typo, another pack's value copied) gives an API that answers 503 to
everything while the workers it should use sit idle under another name. Before gunicorn starts, the
API looks at the worker registry (every deployment on its Redis):

- its own workers are live and serve every language of ``HARK_EXPECT_LANGUAGES`` → start;
- its workers are live but some expected language is missing → exit 2, naming the missing languages
  and what is served;
- none of its workers are live but other deployments have some → exit 2, naming ``HARK_DEPLOYMENT`` and
  the deployments that do have workers ("is HARK_DEPLOYMENT right?");
- no worker at all → exit 2 when languages are expected, else a warning and start;
- none of its workers live now, but its catalog (checkpoints its workers announced within the last day)
  covers the expected languages → the name is right and the workers are down or restarting: a warning and
  start (``/ready`` keeps load balancers away), so an API restarted during a worker outage does not
  crash-loop.

Workers load their models for a while after they start, so the check waits up to
``HARK_EXPECT_WORKERS_SECONDS`` (60 s by default when ``HARK_EXPECT_LANGUAGES`` is set) for the
outcome to be good before deciding. With neither variable set the check is one look that only logs a
warning: ``hark run`` starts its API while its worker is still loading, and an API may rightly start
before its workers (they come and go; ``/ready`` tells load balancers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from hark import registry
from hark.routing import served_languages
from hark.schemas import CheckpointInfo, InstanceRecord
from hark.settings import Settings

log = logging.getLogger(__name__)

#: Wait when HARK_EXPECT_LANGUAGES is set and HARK_EXPECT_WORKERS_SECONDS is not.
DEFAULT_EXPECT_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.5
EXIT_MISCONFIGURED = 2


@dataclass(frozen=True)
class Look:
    """One reading of the registry."""

    own: list[InstanceRecord]
    others: dict[str, list[InstanceRecord]]
    known: list[CheckpointInfo]
    """The deployment's catalog: checkpoints its workers announced within the last day, live or not."""

    @property
    def served(self) -> list[str]:
        return served_languages(list({i.checkpoint.label: i.checkpoint for i in self.own}.values()))


def look(client: redis.Redis, deployment: str) -> Look:
    live = registry.live_deployments(client)
    own = live.pop(deployment, [])
    return Look(own=own, others=live, known=[] if own else registry.catalog(client, deployment))


def _describe(deployments: dict[str, list[InstanceRecord]]) -> str:
    parts = []
    for name, instances in deployments.items():
        languages = served_languages(list({i.checkpoint.label: i.checkpoint for i in instances}.values()))
        shown = ", ".join(languages[:8]) + (f" +{len(languages) - 8}" if len(languages) > 8 else "")
        parts.append(f"{name} ({len({i.worker_id for i in instances})} worker(s): {shown})")
    return "; ".join(parts)


def verdict(deployment: str, expected: list[str], reading: Look, strict: bool) -> tuple[bool, str] | None:
    """(may start, message) for a final reading; None when all is well (nothing to say).

    Args:
        deployment: HARK_DEPLOYMENT.
        expected: HARK_EXPECT_LANGUAGES.
        reading: the registry as last seen.
        strict: the operator asked for the check (HARK_EXPECT_LANGUAGES or HARK_EXPECT_WORKERS_SECONDS set).
    """
    if reading.own:
        missing = [lang for lang in expected if lang not in reading.served]
        if not missing:
            return None
        return False, (f"the workers of deployment {deployment!r} do not serve {', '.join(missing)} "
                       f"(HARK_EXPECT_LANGUAGES={','.join(expected)}); they serve: "
                       f"{', '.join(reading.served) or 'nothing'}. Add a checkpoint covering them to MODEL_URL of "
                       "this deployment's workers, or fix HARK_EXPECT_LANGUAGES")  # fmt: skip
    if reading.known:  # the name is right: its workers ran within a day and are down (or restarting) now
        known = served_languages(reading.known)
        missing = [lang for lang in expected if lang not in known]
        if missing:
            return False, (f"no live worker of deployment {deployment!r}, and the checkpoints it served within the "
                           f"last day do not cover {', '.join(missing)} (HARK_EXPECT_LANGUAGES); they cover "
                           f"{', '.join(known)}")  # fmt: skip
        return True, (f"no live worker of deployment {deployment!r} now (last seen serving "
                      f"{', '.join(c.label for c in reading.known)}); starting: requests answer 503 and /ready "
                      "is not ready until one is back")  # fmt: skip
    if reading.others:
        return not strict, (f"no live worker of HARK_DEPLOYMENT={deployment!r}, but this Redis has workers of other "
                            f"deployments: {_describe(reading.others)}. Is HARK_DEPLOYMENT right? It must equal "
                            "the workers' HARK_DEPLOYMENT")  # fmt: skip
    if expected:
        return False, (f"no worker of any deployment appeared on this Redis, and deployment {deployment!r} is "
                       f"expected to serve {', '.join(expected)} (HARK_EXPECT_LANGUAGES); start its workers "
                       "first or raise HARK_EXPECT_WORKERS_SECONDS")  # fmt: skip
    return True, (f"no worker of deployment {deployment!r} is live yet; requests answer 503 until one "
                  "registers (/ready tells when)")  # fmt: skip


def check_workers(settings: Settings, client: redis.Redis, *, sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> bool:  # fmt: skip
    """Run the start-up check, logging its outcome; False when the API must not start (exit 2)."""
    expected = settings.expect_language_list
    strict = bool(expected) or settings.expect_workers_seconds is not None
    wait = settings.expect_workers_seconds
    if wait is None:
        wait = DEFAULT_EXPECT_WAIT_SECONDS if expected else 0.0
    deadline = clock() + wait
    announced = False
    while True:
        try:
            reading: Look | None = look(client, settings.deployment)
            problem = None
        except redis.RedisError as error:
            reading, problem = None, f"cannot read the worker registry: Redis at {settings.redis_url} fails ({error})"
        outcome = verdict(settings.deployment, expected, reading, strict) if reading else (not strict, problem or "")
        if outcome is None:
            assert reading is not None
            log.info("start-up check: %d worker(s) of deployment %r serve %s", len({i.worker_id for i in reading.own}),
                     settings.deployment, ", ".join(reading.served))  # fmt: skip
            return True
        if clock() >= deadline:
            break
        if not announced:
            log.info("start-up check: waiting up to %.0f s for the workers of deployment %r%s", wait,
                     settings.deployment, f" serving {', '.join(expected)}" if expected else "")  # fmt: skip
            announced = True
        sleep(POLL_SECONDS)
    may_start, message = outcome
    if may_start:
        log.warning("start-up check: %s", message)
    else:
        log.error("start-up check failed: %s", message)
    return may_start


def run_startup_check(settings: Settings) -> bool:
    """:func:`check_workers` on a short-lived Redis client (quick to give up when Redis is down)."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        return check_workers(settings, client)
    finally:
        client.close()
