"""Live transcription over WebSocket: ``/waves/v1/stt/live`` (and the aliases ``/waves/v1/pulse/get_text``,
``/transcribe``).

Everything that can be refused is refused before the upgrade, as a JSON HTTP error the SDK shows:
authentication (401, the app-wide hook), the query (400, :mod:`web.stream_params`), routing by
language exactly as the REST path (400 / 503), a checkpoint with no free slot (503), and a worker
that does not take the session within ``HARK_STREAM_START_TIMEOUT_SECONDS`` (503 + Retry-After; the
session is abandoned, never left queued). That is why this module does the handshake itself with
flask-sock's server (``simple_websocket``) instead of ``Sock.route``, which upgrades before the view runs.

After the upgrade the request thread relays in both directions (:class:`SessionRelay`): binary
frames go to the session's Redis Stream as they come; JSON control messages (``finalize``,
``close_stream``) follow them in order; ``keepalive`` is answered here with ``pong``. A second thread
relays the worker's messages from the session's pub/sub channel to the client. The API's lease on
the session is renewed while the socket is open, and the worker's lease is watched: a worker that
dies is reported (``worker_lost``, close 1011) within ``HARK_STREAM_LEASE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from typing import Any

import redis
from flask import Blueprint, Response, g, request
from simple_websocket import ConnectionClosed, Server
from wsproto.events import CloseConnection, TextMessage
from wsproto.frame_protocol import CloseReason

from hark import registry, routing
from hark.queues import transcribe_queue
from hark.schemas import InstanceRecord, TranscriptionOptions
from hark.sessions import (
    BYTES_PER_SAMPLE,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    ENTRY_ABORT,
    ENTRY_AUDIO,
    ENTRY_CLOSE,
    ENTRY_FINALIZE,
    TASK_STREAM,
    Envelope,
    ErrorMessage,
    SessionStore,
    StreamParams,
    StreamTask,
    new_session_id,
)
from web.auth import BEARER_SUBPROTOCOL
from web.errors import ApiError, current_request_id
from web.license_gate import key_name, stream_place
from web.metrics import note_route, note_status
from web.params import ParamError
from web.services import Services, services
from web.stream_params import parse_stream_params

log = logging.getLogger(__name__)

bp = Blueprint("stream", __name__)

LIVE_PATHS = ("/waves/v1/stt/live", "/waves/v1/pulse/get_text", "/transcribe")
#: The server pings the client this often; a peer that does not answer one is dropped (dead TCP).
PING_INTERVAL_SECONDS = 20.0
#: Longest a send to the client may block (a client that does not read its socket); the session then ends.
SEND_TIMEOUT_SECONDS = 10
#: How long a session the worker ended may wait for its last messages on the channel before the client is told.
END_RELAY_GRACE_SECONDS = 3.0
#: Extra wait (beyond one heartbeat) for a slot when the registry shows the checkpoint full.
FULL_WAIT_SECONDS = 1.0
#: Seconds a refused upgrade tells the client to wait before trying again.
RETRY_AFTER_SECONDS = 2
#: How long the request thread waits for a client frame before doing its housekeeping.
RECEIVE_SLICE_SECONDS = 0.5
CONTROL_TYPES = ("finalize", "close_stream", "keepalive")


@bp.get(LIVE_PATHS[0], websocket=True)
def live() -> Response:
    """Open a live session (see the module docstring for what is checked before the upgrade)."""
    return open_session()


@bp.get(LIVE_PATHS[1], websocket=True)
def live_legacy() -> Response:
    return open_session()


@bp.get(LIVE_PATHS[2], websocket=True)
def live_livekit() -> Response:
    return open_session()


@bp.get(LIVE_PATHS[0])
@bp.get(LIVE_PATHS[1])
@bp.get(LIVE_PATHS[2])
def not_upgraded() -> Response:
    """A plain GET on a live path (werkzeug routes upgrade requests to the views above)."""
    raise ApiError(426, "this endpoint speaks WebSocket: connect with a WebSocket client (Upgrade: websocket) "
                        "and stream audio as binary frames", [{"code": "upgrade_required"}],
                   {"Upgrade": "websocket"})  # fmt: skip


def open_session() -> Response:
    svc = services()
    try:
        params = parse_stream_params(request.args)
    except ParamError as error:
        raise ApiError(400, error.message, error.details) from None
    live = registry.live_instances(svc.redis, svc.settings.deployment)
    route = _route(params, svc, live)
    note_route(route.checkpoint.name, params.language)
    start_timeout = _start_wait(route, svc, live)
    sid = new_session_id()
    store = svc.sessions
    task = StreamTask(
        session_id=sid, deployment=svc.settings.deployment, checkpoint=route.checkpoint.name, params=params,
        options=TranscriptionOptions(language=route.language, detect_among=route.detect_among,
                                     word_timestamps=params.word_timestamps, keywords=params.keywords),
        created_at=time.time(), start_timeout=start_timeout, key_name=key_name(),
    )  # fmt: skip
    log_extra = {"request_id": current_request_id(), "session_id": sid, "checkpoint": route.checkpoint.label,
                 "key_name": g.get("api_key_name") or ""}
    with stream_place(sid):  # the license's max_concurrent_streams (429 when all are open)
        pubsub = svc.redis.pubsub(ignore_subscribe_messages=True)
        ws: HarkServer | None = None
        try:
            pubsub.subscribe(store.channel(sid))  # before the task exists: no message can be missed
            _start_session(task, route.checkpoint.name, svc, log_extra)
            _wait_for_worker(pubsub, task, svc, log_extra)
            ws = HarkServer(request.environ, ping_interval=PING_INTERVAL_SECONDS, subprotocols=[BEARER_SUBPROTOCOL],
                            max_message_size=svc.settings.stream_max_frame_bytes, session_id=sid)  # fmt: skip
            note_status(101)  # upgraded: the session is counted as a 101 when it ends
            log.info("live session open (%s, %d Hz, language %s)", params.encoding, params.sample_rate, params.language,
                     extra=log_extra)  # fmt: skip
            SessionRelay(ws, pubsub, store, task, svc, log_extra).run()
        except BaseException:
            _abort(store, sid)
            raise
        finally:
            pubsub.close()
    return _already_answered(ws)


def _route(params: StreamParams, svc: Services, live: list[InstanceRecord]) -> routing.Route:
    deployment = svc.settings.deployment
    return routing.choose(deployment=deployment, model=params.model, language=params.language,
                          catalog=registry.catalog(svc.redis, deployment), live=live)  # fmt: skip


def _start_wait(route: routing.Route, svc: Services, live: list[InstanceRecord]) -> float:
    """How long to wait for a worker to take the session.

    When every live instance of the checkpoint announces all its slots in use, a slot may still free
    up within a heartbeat (the registry is that old), so the upgrade waits briefly instead of failing
    at once; otherwise it waits up to HARK_STREAM_START_TIMEOUT_SECONDS.
    """
    instances = [i for i in live if i.checkpoint.name == route.checkpoint.name]
    full = bool(instances) and sum(max(0, i.slots - i.in_flight) for i in instances) == 0
    timeout = svc.settings.stream_start_timeout_seconds
    return min(timeout, FULL_WAIT_SECONDS + svc.settings.heartbeat_seconds) if full else timeout


def _start_session(task: StreamTask, checkpoint: str, svc: Services, log_extra: dict[str, str]) -> None:
    store = svc.sessions
    store.create(task, _api_id())
    queue = transcribe_queue(svc.settings.deployment, checkpoint)
    try:
        svc.celery.send_task(TASK_STREAM, kwargs={"payload": task.wire_json()}, queue=queue,
                             task_id=task.session_id, ignore_result=True)  # fmt: skip
    except Exception as error:
        log.error("could not queue the live session on %s: %s", queue, error, extra=log_extra)
        store.abandon(task.session_id)
        raise ApiError(503, "the job queue is unavailable; retry shortly", [{"code": "enqueue_failed"}]) from None


def _wait_for_worker(pubsub: redis.client.PubSub, task: StreamTask, svc: Services, log_extra: dict[str, str]) -> None:
    """Block until a worker claims the session; 503 (session abandoned) past the start timeout."""
    deadline = time.monotonic() + task.start_timeout
    while (remaining := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=min(remaining, 1.0))
        if message is None or message.get("type") != "message":
            continue
        envelope = Envelope.model_validate_json(message["data"])
        if envelope.kind == "ready":
            return
    if not svc.sessions.abandon(task.session_id):
        return  # claimed at the last moment: its ready envelope was in flight
    log.warning("no worker took the live session within %.0f s; refusing it", task.start_timeout, extra=log_extra)
    raise ApiError(503, f"no worker of checkpoint {task.checkpoint} took the session within "
                        f"{task.start_timeout:g} s: every slot is in use (live sessions and batch jobs share "
                        "them); retry shortly", [{"code": "no_free_slot"}],
                   {"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip


def _abort(store: SessionStore, sid: str) -> None:
    """Tell the worker the client is gone (best effort: the client lease expires anyway)."""
    try:
        store.push(sid, ENTRY_ABORT)
        store.release_client(sid)
    except redis.RedisError as error:
        log.warning("could not signal the end of session %s: %s", sid, error)


_API_ID = f"{socket.gethostname()}:{os.getpid()}"


def _api_id() -> str:
    return _API_ID


def error_json(sid: str | None, status: str, message: str) -> str:
    return ErrorMessage(session_id=sid, status=status, message=message).model_dump_json(exclude_none=True)


class HarkServer(Server):
    """flask-sock's server, plus a JSON ``error`` message before the 1009 close of an oversized frame."""

    def __init__(self, environ: dict[str, Any], *, session_id: str, **kwargs: Any) -> None:
        self.session_id = session_id
        self.send_lock = threading.Lock()
        super().__init__(environ, **kwargs)

    def handshake(self) -> None:
        super().handshake()
        # A client that stops reading must not hold the sending thread forever: a send blocked this long
        # fails (OSError), and the session ends. Only sends: the reader thread's recv keeps blocking.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT_SECONDS, 0))
        connection = self.ws
        plain_send = connection.send
        max_size = self.max_message_size

        def send(event: Any) -> bytes:
            if isinstance(event, CloseConnection) and event.code == CloseReason.MESSAGE_TOO_BIG:
                notice = error_json(self.session_id, "frame_too_large",
                                    f"a message was larger than {max_size} bytes; send audio in frames of "
                                    "50-250 ms")  # fmt: skip
                return plain_send(TextMessage(data=notice)) + plain_send(CloseConnection(CLOSE_TOO_BIG, "too big"))
            return plain_send(event)

        connection.send = send  # type: ignore[method-assign]


class SessionRelay:
    """Both directions of one open session, until it ends (see the module docstring)."""

    def __init__(self, ws: HarkServer, pubsub: redis.client.PubSub, store: SessionStore, task: StreamTask,
                 svc: Services, log_extra: dict[str, str]) -> None:  # fmt: skip
        self.ws = ws
        self.pubsub = pubsub
        self.store = store
        self.sid = task.session_id
        self.params = task.params
        self.settings = svc.settings
        self.log_extra = log_extra
        self.closed = threading.Event()
        self.ended_by_worker = False
        self.ended_seen: float | None = None
        self.pushed_bytes = 0
        self.frames = 0
        rate_bytes = task.params.sample_rate * BYTES_PER_SAMPLE[task.params.encoding]
        self.max_backlog_bytes = int(self.settings.stream_max_backlog_seconds * rate_bytes)
        self._last_housekeeping = 0.0

    # --- sending (serialised: the relay thread and the request thread both send) --------------------
    def send(self, text: str) -> bool:
        with self.ws.send_lock:
            if self.closed.is_set():
                return False
            try:
                self.ws.send(text)
            except (ConnectionClosed, OSError):
                self.closed.set()
                return False
            return True

    def close(self, code: int, reason: str = "") -> None:
        with self.ws.send_lock:
            if self.closed.is_set():
                return
            self.closed.set()
            with contextlib.suppress(ConnectionClosed, OSError):
                self.ws.close(reason=code, message=reason[:120] or None)

    def fail(self, status: str, message: str, code: int = CLOSE_INTERNAL) -> None:
        log.warning("live session failed: %s (%s)", message, status, extra=self.log_extra)
        self.send(error_json(self.sid, status, message))
        self.close(code, status)

    # --- the two directions -------------------------------------------------------------------------
    def run(self) -> None:
        relay = threading.Thread(target=self._relay_results, name=f"hark-relay-{self.sid}", daemon=True)
        relay.start()
        try:
            while not self.closed.is_set():
                try:
                    frame = self.ws.receive(timeout=RECEIVE_SLICE_SECONDS)
                except ConnectionClosed:
                    break
                if frame is not None:
                    self._on_frame(frame)
                self._housekeeping()
        finally:
            self.closed.set()
            if not self.ended_by_worker:  # the client left (or the session failed here): free the worker's slot
                _abort(self.store, self.sid)
            relay.join(timeout=2)
            log.info("live session closed (%d frame(s), %d byte(s) of audio)", self.frames, self.pushed_bytes,
                     extra=self.log_extra)  # fmt: skip

    def _on_frame(self, frame: bytes | str) -> None:
        if isinstance(frame, bytes):
            if not frame:
                return
            self.frames += 1
            self.pushed_bytes += len(frame)
            self.store.push(self.sid, ENTRY_AUDIO, frame)
            return
        try:
            message = json.loads(frame)
        except ValueError:
            self.send(error_json(self.sid, "invalid_message", "text frames must be JSON control messages such as "
                                 '{"type": "finalize"}; send audio as binary frames'))  # fmt: skip
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "keepalive":
            self.send('{"type": "pong"}')
        elif kind == "finalize":
            self.store.push(self.sid, ENTRY_FINALIZE)
        elif kind == "close_stream":
            self.store.push(self.sid, ENTRY_CLOSE)
        else:
            self.send(error_json(self.sid, "invalid_message", f"unknown control message type {kind!r}; expected one "
                                 f"of {', '.join(CONTROL_TYPES)}"))  # fmt: skip

    def _housekeeping(self) -> None:
        """Renew the API's lease; notice a dead worker and a backlog the worker does not drain."""
        now = time.monotonic()
        if now - self._last_housekeeping < self.settings.stream_lease_seconds / 3:
            return
        self._last_housekeeping = now
        try:
            self.store.renew_client(self.sid, _api_id())
            if not self.store.owner_alive(self.sid) and not self.closed.is_set():
                if self.store.state(self.sid) != "ended":
                    self.fail("worker_lost", "the worker serving this session stopped; open a new session to go on")
                    return
                # Ended normally: its last messages and the close are on the channel, relayed by the other
                # thread. Only if they never come (a lost publish) is the client told.
                if self.ended_seen is None:
                    self.ended_seen = now
                elif now - self.ended_seen > END_RELAY_GRACE_SECONDS:
                    self.fail("unavailable", "the session ended but its last messages were lost; reconnect")
                    return
            if self.pushed_bytes - self.store.read_bytes(self.sid) > self.max_backlog_bytes:
                self.fail("backlog", f"more than {self.settings.stream_max_backlog_seconds:g} s of audio is waiting "
                          "for the worker (HARK_STREAM_MAX_BACKLOG_SECONDS); the session is ended")  # fmt: skip
        except redis.RedisError as error:
            self.fail("unavailable", f"the session store is unreachable ({type(error).__name__}); reconnect")

    def _relay_results(self) -> None:
        """Relay the worker's envelopes to the client until the session ends."""
        while not self.closed.is_set():
            try:
                message = self.pubsub.get_message(timeout=RECEIVE_SLICE_SECONDS)
            except redis.RedisError as error:
                # Also how an over-limit pub/sub output buffer shows (client-output-buffer-limit pubsub).
                self.fail("unavailable", f"lost the session's result channel ({type(error).__name__}); reconnect")
                return
            if message is None or message.get("type") != "message":
                continue
            envelope = Envelope.model_validate_json(message["data"])
            if envelope.kind == "message" and envelope.message is not None:
                self.send(json.dumps(envelope.message))
            elif envelope.kind == "end":
                self.ended_by_worker = True
                self.close(envelope.code or CLOSE_NORMAL, envelope.reason or "")
                return


def _already_answered(ws: Server | None) -> Response:
    """The response of a view that did the handshake itself: nothing more is written (as flask-sock)."""

    class WebSocketResponse(Response):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if ws is not None and ws.mode == "gunicorn":
                raise StopIteration()
            if ws is not None and ws.mode == "werkzeug":
                return super().__call__(*args, **kwargs)
            return []

    return WebSocketResponse()
