"""Containers whose FFmpeg demuxers do I/O (SDP binds UDP ports, ffconcat opens files) are refused by the
API in milliseconds with the documented 400 ``unsupported_container``, through the real API and worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audio import AudioFactory
from tests.conftest import Deployment
from tests.e2e.helpers import assert_error, post_audio

pytestmark = pytest.mark.e2e

SDP_BODY = b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"

#: The API and worker processes of the tests run with the repository root as working directory.
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wav_next_to_the_processes(audio: AudioFactory) -> Iterator[str]:
    """A real speech WAV under the processes' working directory; its relative path (what ffconcat can name)."""
    relative = f"tests/_ffconcat_target_{uuid.uuid4().hex[:8]}.wav"
    target = REPO_ROOT / relative
    target.write_bytes(audio.speech("hello world").read_bytes())
    try:
        yield relative
    finally:
        target.unlink(missing_ok=True)


def _refused_fast(deployment: Deployment, body: bytes) -> dict:
    started = time.perf_counter()
    answer = post_audio(deployment.url, body, language="en")
    took = time.perf_counter() - started
    body_json = assert_error(answer, 400, "container")
    assert body_json["details"][0]["code"] == "unsupported_container", body_json
    assert took < 1.0, f"the refusal took {took:.2f} s: a demuxer that does I/O was reached"
    return body_json


def test_sdp_body_is_refused_in_milliseconds(shared_deployment: Deployment) -> None:
    body = _refused_fast(shared_deployment, SDP_BODY)
    assert "wav" in body["error"] and "flac" in body["error"], body


def test_ffconcat_body_never_reads_the_file_it_names(shared_deployment: Deployment,
                                                     wav_next_to_the_processes: str) -> None:  # fmt: skip
    # Before the allow-list the probe and the worker both followed the reference and transcribed the
    # named file ("hello world"), with a 200.
    _refused_fast(shared_deployment, f"ffconcat version 1.0\nfile '{wav_next_to_the_processes}'\n".encode())
