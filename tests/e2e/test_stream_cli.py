"""`hark stream` end to end: the real command (a subprocess) against the shared deployment's API and worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audio import ENGLISH_SENTENCES, AudioFactory
from tests.conftest import Deployment
from tests.e2e.helpers import wer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FINAL_LINE = re.compile(r"^\[(\d\d):(\d\d\.\d) → (\d\d):(\d\d\.\d)\] (.+)$")


def _hark_stream(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARK_")}
    return subprocess.run([sys.executable, "-m", "hark.cli", "stream", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def _two_sentences(audio: AudioFactory) -> Path:
    """Two sentences with a pause long enough for an endpoint, as MP3 (the CLI decodes any container)."""
    out = audio.cache_dir / "stream-cli-two-sentences.mp3"
    if not out.exists():
        pause = audio.silence(1.2, rate=22050)
        joined = audio.cache_dir / "stream-cli-two-sentences.wav"
        subprocess.run(["sox", str(audio.english(0)), str(pause), str(audio.english(2)), str(pause), str(joined)],
                       check=True, timeout=60)  # fmt: skip
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(joined), str(out)], check=True, timeout=60)
    return out


def test_a_file_streams_to_finals_with_times(shared_deployment: Deployment, audio: AudioFactory) -> None:
    result = _hark_stream(str(_two_sentences(audio)), "--url", shared_deployment.url, "--speed", "2",
                          "--eou-timeout-ms", "500")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    parsed = [FINAL_LINE.match(line) for line in lines]
    assert lines and all(parsed), f"stdout (not a terminal) must hold only final lines: {lines}"
    assert len(lines) >= 2, f"the pause should end the first utterance: {lines}"
    starts = [int(m[1]) * 60 + float(m[2]) for m in parsed if m]
    assert starts == sorted(starts) and starts[-1] > 2.0, starts
    text = " ".join(m[5] for m in parsed if m)
    assert wer(f"{ENGLISH_SENTENCES[0]} {ENGLISH_SENTENCES[2]}", text) <= 0.3, text


def test_json_lines_vad_events_and_mulaw(shared_deployment: Deployment, audio: AudioFactory) -> None:
    result = _hark_stream(str(audio.english(1)), "--url", shared_deployment.url, "--speed", "4", "--json",
                          "--vad-events", "--encoding", "mulaw", "--sample-rate", "8000")  # fmt: skip
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = {m["type"] for m in messages}
    assert {"transcription", "speech_started"} <= kinds, kinds
    finals = [m for m in messages if m.get("is_final")]
    assert finals and finals[-1]["is_last"] and sum(1 for m in finals if m["is_last"]) == 1
    assert wer(ENGLISH_SENTENCES[1], " ".join(m["transcript"] for m in finals)) <= 0.3, finals


def test_a_refused_upgrade_exits_2_with_the_servers_error(shared_deployment: Deployment, audio: AudioFactory) -> None:
    result = _hark_stream(str(audio.english(1)), "--url", shared_deployment.url, "--language", "xx")
    assert result.returncode == 2, result.stderr
    assert "HTTP 400" in result.stderr and "'xx'" in result.stderr, result.stderr
