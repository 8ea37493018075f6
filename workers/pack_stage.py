"""Window packing inside a batch: the short members of a lane's batch go to the packer first.

A batch of waiting same-options submissions (:mod:`workers.scheduler`) is exactly the packer's input
(:mod:`workers.packing`). Each member's audio is decoded now, up to 30 s: a member whose audio ended
is offered to the packer; the packer's transcripts and errors answer their members at once; the
members it sends solo and those longer than 30 s (their audio still readable from where it stopped)
are returned to :meth:`workers.engine.WhisperEngine.transcribe_many`, which runs them as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from workers.audio import SAMPLE_RATE, AudioSource, PcmAudio
from workers.executor import BatchDone, BatchRequest
from workers.packing import PackRequest, PackResult, WindowPacker

logger = logging.getLogger(__name__)

#: Audio read per member to decide whether it is short enough to offer.
READ_SECONDS = 30.0


class Replay:
    """An audio source that serves samples already read, then the rest of the source."""

    def __init__(self, head: np.ndarray, rest: AudioSource) -> None:
        self._head = head
        self._rest = rest

    def read(self, max_samples: int) -> np.ndarray:
        if self._head.size:
            piece, self._head = self._head[:max_samples], self._head[max_samples:]
            if piece.size == max_samples:
                return piece
            return np.concatenate((piece, self._rest.read(max_samples - piece.size)))
        return self._rest.read(max_samples)

    def close(self) -> None:
        self._rest.close()


class PackStage:
    """Callable set as ``engine.pack_stage``; counts what it packed."""

    def __init__(self, packer: WindowPacker) -> None:
        self.packer = packer
        self.packed = 0
        """Members answered by the packer so far (logs, tests)."""

    def __call__(self, requests: Sequence[BatchRequest], done: BatchDone) -> list[tuple[int, BatchRequest]]:
        limit = int(READ_SECONDS * SAMPLE_RATE)
        offered: list[PackRequest] = []
        samples: dict[int, np.ndarray] = {}
        left: list[tuple[int, BatchRequest]] = []
        for index, (audio, options, token) in enumerate(requests):
            try:
                token.check()
                head = audio.read(limit)
            except BaseException as error:
                done(index, None, error)
                continue
            if head.size < limit:  # the whole audio: short enough to offer
                samples[index] = head
                offered.append(PackRequest(index, head, options, token))
            else:
                left.append((index, (Replay(head, audio), options, token)))
        try:
            result = self.packer.pack(offered) if len(offered) > 1 else None
        except Exception:
            logger.exception("packing failed; decoding its requests solo")
            result = None
        if result is None:
            result = PackResult(fallback={request.key: "not packed" for request in offered})
        for key, transcript in result.transcripts.items():
            done(int(key), transcript, None)  # type: ignore[call-overload]
        for key, error in result.errors.items():
            done(int(key), None, error)  # type: ignore[call-overload]
        self.packed += len(result.transcripts)
        for key in result.fallback:
            index = int(key)  # type: ignore[call-overload]
            left.append((index, (PcmAudio(samples[index]), requests[index][1], requests[index][2])))
        return sorted(left, key=lambda item: item[0])
