"""Live sessions (WebSocket streaming): key names, the wire messages and the coordination both tiers share.

One session, keys per deployment (all expire; leases are renewed while their side lives):

- ``hark:<dep>:session:<sid>``         hash: ``state`` (pending → running → ended, or pending → abandoned),
  checkpoint, params, created_at, owner (worker id)
- ``hark:<dep>:session:<sid>:audio``   Redis Stream, API → worker: audio frames and control entries
  (nothing is lost if the worker reads a moment late; the worker trims what it has read)
- ``hark:<dep>:session:<sid>:events``  pub/sub channel, worker → API: :class:`Envelope` JSON
- ``hark:<dep>:session:<sid>:owner``   the owning worker's lease (PX), renewed while the session runs
- ``hark:<dep>:session:<sid>:client``  the API server's lease (PX), renewed while the socket is open

Exactly one worker owns a session: :meth:`SessionStore.claim` moves ``pending`` to ``running`` and
sets the owner lease in one Lua call; :meth:`SessionStore.abandon` (the API gave up waiting for a
slot) moves ``pending`` to ``abandoned`` in another, so a worker that gets the task late drops it.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field

from hark.queues import redis_key
from hark.schemas import Keyword, TranscriptionOptions

TASK_STREAM = "hark.stream_session"

#: Sample rates a client may declare (the Pulse contract).
SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)
Encoding = Literal["linear16", "linear32", "alaw", "mulaw", "opus", "ogg_opus"]
ENCODINGS: tuple[str, ...] = ("linear16", "linear32", "alaw", "mulaw", "opus", "ogg_opus")

#: Bytes per second of audio in each fixed-rate encoding at 1 Hz (compressed ones: an upper bound).
BYTES_PER_SAMPLE: dict[str, int] = {"linear16": 2, "linear32": 4, "alaw": 1, "mulaw": 1, "opus": 1, "ogg_opus": 1}

SessionState = Literal["pending", "running", "ended", "abandoned"]

#: Stream entry kinds (field ``k``) sent by the API to the worker.
ENTRY_AUDIO = "a"
ENTRY_FINALIZE = "finalize"
ENTRY_CLOSE = "close"
ENTRY_ABORT = "abort"

#: WebSocket close codes (RFC 6455) used by the session.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012
CLOSE_TRY_LATER = 1013


def new_session_id() -> str:
    return "s_" + secrets.token_hex(12)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def wire(self) -> dict[str, Any]:
        """JSON-ready dict without None values (the SDK mis-parses typed nulls)."""
        return self.model_dump(mode="json", exclude_none=True)


# --- what the client asked for (validated by the API, carried to the worker) -------------------------


class StreamParams(_Model):
    """The query of one live session, after validation (defaults apply to a bare connection)."""

    model: str = "pulse"
    language: str = "en"
    sample_rate: int = 16000
    encoding: Encoding = "linear16"
    word_timestamps: bool = False
    sentence_timestamps: bool = False
    full_transcript: bool = False
    punctuate: bool = True
    capitalize: bool = True
    max_words: int | None = None
    """Cut the utterance with a final once it holds this many words."""
    eou_timeout_ms: int = 800
    """Silence after speech that ends an utterance (``eou_timeout_ms`` / ``endpointing_timeout``)."""
    endpointing: bool = True
    """False: no finals at pauses, only on ``finalize``, ``close_stream``, ``max_words`` or the length cap."""
    vad: bool = True
    """False: every frame is speech to the segmenter (endpoints only on request); Whisper's own VAD still
    drops silence inside a decode."""
    vad_events: bool = False
    vad_threshold: float = 0.5
    vad_min_speech_ms: int = 250
    keywords: list[Keyword] = Field(default_factory=list)


class StreamTask(_Model):
    """The payload of a ``hark.stream_session`` task."""

    session_id: str
    deployment: str
    checkpoint: str
    params: StreamParams
    options: TranscriptionOptions
    """Language to force / detect among, as routing decided (the same as a REST request's)."""
    created_at: float
    start_timeout: float
    """Seconds the API waits for the claim; a worker that gets the task later finds it abandoned."""
    key_name: str | None = None
    """Name of the client's API key, for usage accounting (:mod:`hark.usage`) when the session ends."""

    def wire_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# --- what the worker sends back --------------------------------------------------------------------


class WordOut(_Model):
    word: str
    start: float
    end: float
    confidence: float


class SentenceOut(_Model):
    text: str
    start: float
    end: float


class TranscriptionMessage(_Model):
    """A partial (``is_final`` false) or final transcript; ``transcript`` and ``transcription`` agree."""

    type: Literal["transcription"] = "transcription"
    session_id: str
    transcript: str
    transcription: str
    is_final: bool
    is_last: bool = False
    from_finalize: bool | None = None
    language: str | None = None
    start: float | None = None
    """Seconds since the first audio frame where the utterance starts (extra key, kept by the SDK)."""
    end: float | None = None
    words: list[WordOut] | None = None
    utterances: list[SentenceOut] | None = None
    full_transcript: str | None = None


class VadEvent(_Model):
    type: Literal["speech_started", "speech_ended"]
    session_id: str
    timestamp: float


class ErrorMessage(_Model):
    type: Literal["error"] = "error"
    session_id: str | None = None
    status: str
    message: str


class Envelope(_Model):
    """What travels on a session's channel: a message for the client, or a signal for the API.

    ``kind``: ``ready`` (a worker claimed the session), ``message`` (relay ``message`` to the client),
    ``end`` (the session is over: close the socket with ``code`` after relaying).
    """

    kind: Literal["ready", "message", "end"]
    message: dict[str, Any] | None = None
    code: int | None = None
    reason: str | None = None


# --- the coordination in Redis ---------------------------------------------------------------------

_CLAIM = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""
_ABANDON = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'abandoned')
return 1
"""
_RENEW_OWNER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


class SessionStore:
    """Reads and writes the Redis side of one deployment's live sessions."""

    def __init__(self, client: redis.Redis, deployment: str, lease_seconds: float, ttl_seconds: float) -> None:
        """Args:
        client: Redis (``decode_responses=False``).
        deployment: Whose sessions.
        lease_seconds: Expiry of the owner and client leases (``HARK_STREAM_LEASE_SECONDS``).
        ttl_seconds: Expiry of the session hash and audio stream, renewed with the leases.
        """
        self.redis = client
        self.deployment = deployment
        self.lease_ms = int(lease_seconds * 1000)
        self.ttl_seconds = int(max(ttl_seconds, lease_seconds * 4))
        self._claim = client.register_script(_CLAIM)
        self._abandon = client.register_script(_ABANDON)
        self._renew_owner = client.register_script(_RENEW_OWNER)

    # --- keys ----------------------------------------------------------------------------------
    def session_key(self, sid: str) -> str:
        return redis_key(self.deployment, "session", sid)

    def audio_key(self, sid: str) -> str:
        return redis_key(self.deployment, "session", sid, "audio")

    def channel(self, sid: str) -> str:
        return redis_key(self.deployment, "session", sid, "events")

    def owner_key(self, sid: str) -> str:
        return redis_key(self.deployment, "session", sid, "owner")

    def client_key(self, sid: str) -> str:
        return redis_key(self.deployment, "session", sid, "client")

    # --- API side ------------------------------------------------------------------------------
    def create(self, task: StreamTask, api_id: str) -> None:
        """Record a pending session and the API's lease on it."""
        sid = task.session_id
        pipe = self.redis.pipeline()
        pipe.hset(self.session_key(sid), mapping={
            "state": "pending", "checkpoint": task.checkpoint, "created_at": f"{task.created_at:.3f}",
            "params": task.params.model_dump_json(), "api": api_id,
        })  # fmt: skip
        pipe.expire(self.session_key(sid), self.ttl_seconds)
        pipe.set(self.client_key(sid), api_id, px=self.lease_ms)
        pipe.execute()

    def abandon(self, sid: str) -> bool:
        """Give up a session no worker has claimed; False if a worker claimed it first."""
        return bool(self._abandon(keys=[self.session_key(sid)]))

    def renew_client(self, sid: str, api_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.set(self.client_key(sid), api_id, px=self.lease_ms)
        pipe.expire(self.session_key(sid), self.ttl_seconds)
        pipe.expire(self.audio_key(sid), self.ttl_seconds)
        pipe.execute()

    def owner_alive(self, sid: str) -> bool:
        return bool(self.redis.exists(self.owner_key(sid)))

    def push(self, sid: str, kind: str, data: bytes | None = None) -> None:
        """Append an entry for the worker (the backlog is measured in bytes read, see :meth:`read_bytes`)."""
        fields: dict[str, bytes | str] = {"k": kind}
        if data is not None:
            fields["d"] = data
        pipe = self.redis.pipeline()
        pipe.xadd(self.audio_key(sid), fields)  # type: ignore[arg-type]
        pipe.expire(self.audio_key(sid), self.ttl_seconds)  # also bounds a stream re-created after the end
        pipe.execute()

    def read_bytes(self, sid: str) -> int:
        """Bytes of audio the worker has read so far (the API compares it with what it pushed: the backlog)."""
        value = self.redis.hget(self.session_key(sid), "read_bytes")
        return int(value or 0)

    def release_client(self, sid: str) -> None:
        """The socket is closed: drop the API's lease (the worker notices within a second)."""
        self.redis.delete(self.client_key(sid))

    # --- worker side ---------------------------------------------------------------------------
    def claim(self, sid: str, worker_id: str) -> bool:
        """Take a pending session; False if it was abandoned, ended or already taken."""
        return bool(self._claim(keys=[self.session_key(sid), self.owner_key(sid)], args=[worker_id, self.lease_ms]))

    def renew_owner(self, sid: str, worker_id: str) -> bool:
        """Renew the owner lease; False if this worker no longer holds it."""
        return bool(self._renew_owner(keys=[self.owner_key(sid)], args=[worker_id, self.lease_ms]))

    def client_alive(self, sid: str) -> bool:
        return bool(self.redis.exists(self.client_key(sid)))

    def read(self, sid: str, after: str, block_ms: int, count: int = 64) -> list[tuple[str, dict[bytes, bytes]]]:
        """Entries after `after` (``"0"`` for the first), waiting up to `block_ms` for one."""
        answer = self.redis.xread({self.audio_key(sid): after}, count=count, block=block_ms)
        if not answer:
            return []
        _key, entries = answer[0]
        return [(entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields)
                for entry_id, fields in entries]  # fmt: skip

    def mark_read(self, sid: str, upto: str, read_bytes: int) -> None:
        """Drop the entries read so far (``upto`` inclusive) and record the bytes read (for the backlog check)."""
        major, _, minor = upto.partition("-")
        pipe = self.redis.pipeline()
        pipe.xtrim(self.audio_key(sid), minid=f"{major}-{int(minor or 0) + 1}", approximate=False)
        pipe.hset(self.session_key(sid), "read_bytes", read_bytes)
        pipe.execute()

    def publish(self, sid: str, envelope: Envelope) -> int:
        """Send an envelope to the API server relaying the session; number of receivers."""
        return int(self.redis.publish(self.channel(sid), envelope.model_dump_json(exclude_none=True)))

    def end(self, sid: str) -> None:
        """Mark the session over and drop its audio and owner lease (the hash expires by itself)."""
        pipe = self.redis.pipeline()
        pipe.hset(self.session_key(sid), mapping={"state": "ended", "ended_at": f"{time.time():.3f}"})
        pipe.expire(self.session_key(sid), 300)
        pipe.delete(self.audio_key(sid), self.owner_key(sid))
        pipe.execute()

    def state(self, sid: str) -> str | None:
        value = self.redis.hget(self.session_key(sid), "state")
        return value.decode() if isinstance(value, bytes) else value


def message_envelope(message: BaseModel) -> Envelope:
    return Envelope(kind="message", message=json.loads(message.model_dump_json(exclude_none=True)))
