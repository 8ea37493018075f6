"""Window packing inside a batch: the short members of a lane's batch go to the packer first.

A batch of waiting same-options submissions (:mod:`workers.scheduler`) is exactly the packer's input
(:mod:`workers.packing`). Each member's audio is decoded now, up to 30 s: a member whose audio ended
is offered to the packer, which plans windows. This call decodes only the first window and answers its
members as soon as it is mapped; the members of later windows (to be packed again) and those the
packer sends solo are handed back to the run queue first, in their place by arrival (:class:`workers.executor.Requeue`,
as decoded samples), so another idle lane starts them while this one decodes. Members longer than
30 s (their audio still readable from where it stopped) are returned to
:meth:`workers.engine.WhisperEngine.transcribe_many`, which runs them as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from workers.audio import SAMPLE_RATE, AudioSource, PcmAudio
from workers.executor import BatchDone, BatchRequest, Requeue
from workers.packing import PackPlan, PackRequest, WindowPacker
from workers.transcript import Transcript

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
        plan = self._plan(offered)
        if plan is None:
            left.extend((request.key, (PcmAudio(request.samples), request.options, request.cancel))  # type: ignore[misc]
                        for request in offered)  # fmt: skip
            return sorted(left, key=lambda item: item[0])

        def answer(key: object, transcript: Transcript | None, error: BaseException | None) -> None:
            done(int(key), transcript, error)  # type: ignore[call-overload]

        def hand_back(key: object, alone: bool) -> None:
            done(int(key), None, Requeue(PcmAudio(samples[int(key)]), alone=alone))  # type: ignore[call-overload]

        plan.answer_new(answer)
        # Before decoding: what this call will not decode goes back to the run queue now, so an idle
        # lane can start it while this one decodes its window.
        for window in plan.windows[1:]:
            for key in window.keys:
                hand_back(key, alone=False)  # packed again, with whatever waits by then
        handed = set(plan.result.fallback)
        for key in handed:
            hand_back(key, alone=True)
        for window in plan.windows[:1]:
            self.packer.decode_window(window, plan.result)
            plan.answer_new(answer)  # its members are answered as soon as it is mapped
            self.packed += sum(1 for key in window.keys if key in plan.result.transcripts)
        for key in set(plan.result.fallback) - handed:  # ambiguous after decoding: solo, by whichever lane is free
            hand_back(key, alone=True)
        return sorted(left, key=lambda item: item[0])

    def _plan(self, offered: list[PackRequest]) -> PackPlan | None:
        """The packer's plan for the offered requests; None to decode them solo in this call."""
        if len(offered) < 2:
            return None
        try:
            return self.packer.plan(offered)
        except Exception:
            logger.exception("packing failed; decoding its requests solo")
            return None
