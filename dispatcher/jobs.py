"""Which deployment holds a job: ``GET /waves/v1/stt/jobs/<request_id>`` through the dispatcher.

A request id (``req_`` + 24 hex) is made by the deployment that accepted the job and says nothing
about it, and the dispatcher does not rewrite ids (the webhook, the logs and ``X-Request-ID`` carry
the deployment's own). So the dispatcher:

1. remembers the deployment of every id it forwarded (the ``X-Request-ID`` of each answer) in a
   bounded in-memory LRU: the common case (submit, then poll the same dispatcher) costs one lookup;
2. on a miss (another dispatcher replica accepted it, a restart, ``language`` not given) asks every
   deployment at once and takes the one answer that is not 404 — ids are random, at most one
   deployment knows it;
3. with ``?language=xx`` on the poll, goes straight to that language's deployment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from hark.route_map import Deployment

#: Ids remembered per dispatcher process (about 150 bytes each).
DEFAULT_CAPACITY = 100_000


class JobLocator:
    """A thread-safe LRU of request id -> deployment."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, Deployment] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, deployment: Deployment) -> None:
        with self._lock:
            self._ids[request_id] = deployment
            self._ids.move_to_end(request_id)
            if len(self._ids) > self.capacity:
                self._ids.popitem(last=False)

    def lookup(self, request_id: str) -> Deployment | None:
        with self._lock:
            return self._ids.get(request_id)
