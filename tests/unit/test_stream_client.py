"""`hark stream` without a platform: arguments, decoding and encodings, printing, the microphone's error
path, and whole sessions against a small fake live server (websockets' own sync server)."""

from __future__ import annotations

import audioop
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve

from hark import stream_client, stream_source
from hark.cli import SUBCOMMANDS
from hark.stream_client import live_url, parse_args, query
from hark.stream_display import CLEAR_LINE, Printer, clock, final_line
from hark.stream_source import AudioSourceError, Microphone, decode_file, encode_pcm, frame_bytes
from tests.audio import AudioFactory, wav_duration

SENTENCE = "please call me back tomorrow morning"


# --- arguments ------------------------------------------------------------------------------------


def test_registered_as_a_subcommand() -> None:
    assert SUBCOMMANDS["stream"][0] == "hark.stream_client"


def test_defaults_and_options() -> None:
    args = parse_args(["talk.mp3"])
    assert args.file == Path("talk.mp3") and not args.mic
    assert (args.language, args.encoding, args.sample_rate, args.speed) == ("en", "linear16", 16000, 1.0)
    assert query(args) == {"model": "pulse", "language": "en", "sample_rate": "16000", "encoding": "linear16"}
    args = parse_args(["--mic", "--language", "de", "--encoding", "mulaw", "--sample-rate", "8000", "--word-timestamps",
                       "--eou-timeout-ms", "500", "--vad-events", "--json", "--speed", "4"])  # fmt: skip
    assert args.mic and args.file is None and args.json and args.speed == 4.0
    assert query(args) == {"model": "pulse", "language": "de", "sample_rate": "8000", "encoding": "mulaw",
                           "word_timestamps": "true", "eou_timeout_ms": "500", "vad_events": "true"}  # fmt: skip


@pytest.mark.parametrize("argv", [[], ["a.wav", "--mic"], ["a.wav", "--speed", "0"], ["a.wav", "--speed", "x"],
                                  ["a.wav", "--encoding", "opus"], ["a.wav", "--sample-rate", "12345"],
                                  ["a.wav", "--device", "alsa:hw:1"], ["--mic", "--device", "hw1"]])  # fmt: skip
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(argv)
    assert caught.value.code == 2
    assert "usage: hark stream" in capsys.readouterr().err


def test_device() -> None:
    assert parse_args(["--mic", "--device", "alsa:hw:1,0"]).device == ("alsa", "hw:1,0")
    assert parse_args(["--mic"]).device is None


def test_live_url() -> None:
    params = {"language": "en"}
    assert live_url(None, 7100, params) == "ws://127.0.0.1:7100/waves/v1/stt/live?language=en"
    assert live_url("http://h:9", 1, params) == "ws://h:9/waves/v1/stt/live?language=en"
    assert live_url("https://h/", 1, params) == "wss://h/waves/v1/stt/live?language=en"
    assert live_url("ws://h/transcribe?x=1&language=de", 1, params) == "ws://h/transcribe?x=1&language=en"
    with pytest.raises(ValueError, match="--url"):
        live_url("ftp://h", 1, params)


# --- decoding and encodings -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wav", "mp3", "flac", "ogg", "stereo-44k"])
def test_decode_file_gives_16k_mono_of_the_right_duration(audio: AudioFactory, kind: str) -> None:
    speech = audio.speech(SENTENCE)
    source = {
        "wav": lambda: speech,
        "mp3": lambda: audio.ffmpeg(speech, "mp3"),
        "flac": lambda: audio.convert(speech, "flac"),
        "ogg": lambda: audio.opus(speech),
        "stereo-44k": lambda: audio.convert(speech, "wav", rate=44100, channels=2),
    }[kind]()
    pcm = decode_file(source)
    seconds = len(pcm) / 2 / 16000
    tolerance = 0.01 if kind in ("wav", "flac", "stereo-44k") else 0.08  # lossy codecs pad a frame or two
    assert abs(seconds - wav_duration(speech)) <= tolerance, (kind, seconds, wav_duration(speech))
    samples = np.frombuffer(pcm, dtype="<i2")
    assert np.abs(samples).max() > 3000, "speech decoded to near silence"


def test_decode_file_at_another_rate(audio: AudioFactory) -> None:
    speech = audio.speech(SENTENCE)
    assert abs(len(decode_file(speech, 8000)) / 2 / 8000 - wav_duration(speech)) <= 0.01


def test_bad_files_are_refused(audio: AudioFactory, tmp_path: Path) -> None:
    with pytest.raises(AudioSourceError, match="no such file"):
        decode_file(tmp_path / "missing.wav")
    with pytest.raises(AudioSourceError, match="not audio"):
        decode_file(audio.random_bytes())
    with pytest.raises(AudioSourceError, match="no audio samples"):
        decode_file(audio.zero_length())
    playlist = tmp_path / "list.ffconcat"
    playlist.write_text(f"ffconcat version 1.0\nfile '{audio.speech(SENTENCE)}'\n")
    with pytest.raises(AudioSourceError):  # a demuxer that opens other files is never reached
        decode_file(playlist)


def test_encodings() -> None:
    pcm = np.arange(-32768, 32768, 7, dtype="<i2").tobytes()
    assert encode_pcm(pcm, "linear16") == pcm
    assert encode_pcm(pcm + b"\x01", "linear16") == pcm
    assert encode_pcm(pcm, "mulaw") == audioop.lin2ulaw(pcm, 2)
    assert encode_pcm(pcm, "alaw") == audioop.lin2alaw(pcm, 2)
    floats = np.frombuffer(encode_pcm(pcm, "linear32"), dtype="<f4")
    assert floats.min() == -1.0 and floats.max() < 1.0
    assert np.allclose(floats * 32768, np.frombuffer(pcm, dtype="<i2"))
    with pytest.raises(ValueError, match="opus"):
        encode_pcm(pcm, "opus")
    assert frame_bytes(16000, "linear16") == 3200 and frame_bytes(8000, "mulaw") == 800
    assert frame_bytes(48000, "linear32") == 19200


# --- printing -------------------------------------------------------------------------------------


def _partial(text: str) -> dict[str, Any]:
    return {"type": "transcription", "session_id": "s_1", "transcript": text, "transcription": text,
            "is_final": False, "is_last": False}  # fmt: skip


def _final(text: str, start: float | None = 1.25, end: float | None = 3.5, last: bool = False,
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    message = {**_partial(text), "is_final": True, "is_last": last, "language": "en", **extra}
    if start is not None:
        message.update(start=start, end=end)
    return message


def test_clock_and_final_line() -> None:
    assert clock(0) == "00:00.0" and clock(83.44) == "01:23.4" and clock(3725.0) == "1:02:05.0"
    assert final_line(_final("hello world")) == "[00:01.2 → 00:03.5] hello world"
    assert final_line(_final("hello", start=None)) == "hello"


def test_terminal_shows_partials_in_place_and_finals_on_lines() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = Printer(out, err, tty=True, width=30)
    for message in (_partial("hel"), _partial("hello wor"), _final("hello world"),
                    _partial("and a very long partial that is wider than the terminal"),
                    {"type": "speech_ended", "session_id": "s_1", "timestamp": 4.0},
                    _final("", start=None, last=True)):  # fmt: skip
        printer.handle(message)
    text = out.getvalue()
    assert text.count(CLEAR_LINE + "\x1b[2mhel") == 2  # each partial rewrites the line
    assert "[00:01.2 → 00:03.5] hello world\n" in text
    assert "…" in text and "wider than the terminal" in text
    assert all(len(part) < 30 + 12 for part in text.split(CLEAR_LINE)), "a partial wider than the terminal"
    assert "· speech ended at 00:04.0" in text
    assert printer.finals == 1 and err.getvalue() == ""


def test_a_pipe_gets_only_finals_and_vad_notes_go_to_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = Printer(out, err, tty=False)
    words = [{"word": "hello", "start": 1.25, "end": 1.6, "confidence": 0.9},
             {"word": " world", "start": 1.7, "end": 2.0, "confidence": 0.8}]  # fmt: skip
    for message in (_partial("hel"), {"type": "speech_started", "session_id": "s_1", "timestamp": 1.1},
                    _final("hello world", words=words), _partial("next"), _final("next one", 4.0, 5.0, last=True),
                    {"type": "error", "status": "backlog", "message": "too slow"}):  # fmt: skip
        printer.handle(message)
    assert out.getvalue() == ("[00:01.2 → 00:03.5] hello world\n    hello@1.25 world@1.70\n"
                              "[00:04.0 → 00:05.0] next one\n")  # fmt: skip
    assert err.getvalue() == "· speech started at 00:01.1\n"


def test_json_prints_every_message() -> None:
    out = io.StringIO()
    printer = Printer(out, io.StringIO(), tty=True, as_json=True)
    messages = [_partial("hel"), _final("hello"), {"type": "pong"}]
    for message in messages:
        printer.handle(message)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == messages


# --- the microphone -------------------------------------------------------------------------------


def test_no_capture_device_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                            ) -> None:  # fmt: skip
    # Devices no machine has, so the test means the same on a laptop with a microphone.
    monkeypatch.setattr(stream_source, "MIC_INPUTS", (("alsa", "hark_no_such_card"), ("pulse", "hark_no_such_source")))
    monkeypatch.setenv("PULSE_SERVER", "unix:/nonexistent/hark-pulse")
    with pytest.raises(AudioSourceError, match="no audio capture device found") as caught:
        Microphone().open()
    assert "alsa hark_no_such_card" in str(caught.value) and "pulse hark_no_such_source" in str(caught.value)
    assert stream_client.main(["--mic"]) == 2
    err = capsys.readouterr().err
    assert "no audio capture device found" in err and "hark stream FILE" in err


def test_mic_without_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_source.shutil, "which", lambda name: None)
    with pytest.raises(AudioSourceError, match="needs ffmpeg"):
        Microphone().open()


def test_microphone_chunks_from_a_capture_that_works(monkeypatch: pytest.MonkeyPatch, audio: AudioFactory) -> None:
    """ffmpeg's lavfi test source stands in for a device: the capture path itself (chunks, stop)."""
    monkeypatch.setattr(stream_source, "MIC_INPUTS", (("lavfi", "sine=frequency=440:sample_rate=16000"),))
    mic = Microphone().open()
    try:
        chunks = mic.chunks()
        first = [next(chunks) for _ in range(5)]
    finally:
        mic.stop()
    assert mic.name == "lavfi:sine=frequency=440:sample_rate=16000"
    assert [len(c) for c in first] == [3200] * 5
    assert mic.process is not None and mic.process.poll() is not None


# --- whole sessions against a fake server ---------------------------------------------------------


@dataclass
class FakeLive:
    """What the fake server saw, and how it behaves."""

    behaviour: str = "clean"
    frames: list[bytes] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    path: str = ""


def _session(conn: ServerConnection, fake: FakeLive) -> None:
    assert conn.request is not None
    fake.headers, fake.path = dict(conn.request.headers.raw_items()), conn.request.path
    for message in conn:
        if isinstance(message, bytes):
            fake.frames.append(message)
            if len(fake.frames) == 1:
                conn.send(json.dumps(_partial("plea")))
                if fake.behaviour == "error":
                    conn.send(json.dumps({"type": "error", "status": "invalid_audio", "message": "not linear16"}))
                    conn.close(1007, "invalid_audio")
                    return
            continue
        fake.controls.append(json.loads(message))
        if fake.controls[-1] == {"type": "close_stream"} and fake.behaviour != "hang":
            if fake.behaviour == "clean":
                conn.send(json.dumps(_final(SENTENCE, 0.3, 2.4)))
                conn.send(json.dumps(_final("", start=None, last=True)))
            conn.close(1000)
            return


@pytest.fixture
def fake_server() -> Iterator[Callable[[str], tuple[FakeLive, str]]]:
    servers: list[Any] = []

    def start(behaviour: str) -> tuple[FakeLive, str]:
        fake = FakeLive(behaviour)

        def refuse(conn: ServerConnection, request: Any) -> Response | None:
            if behaviour != "refuse":
                return None
            body = json.dumps({"error": "language 'xx' is not served", "request_id": "req_1"}).encode()
            headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return Response(400, "Bad Request", headers, body)

        server = serve(lambda conn: _session(conn, fake), "127.0.0.1", 0, process_request=refuse)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return fake, f"http://127.0.0.1:{server.socket.getsockname()[1]}"

    yield start
    for server in servers:
        server.shutdown()


def test_a_file_streams_in_100ms_frames_and_ends_cleanly(fake_server: Callable[[str], tuple[FakeLive, str]],
                                                         audio: AudioFactory, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("HARK_API_KEYS", "k-first,k-second")
    fake, url = fake_server("clean")
    speech = audio.speech(SENTENCE)
    code = stream_client.main([str(speech), "--url", url, "--speed", "25", "--word-timestamps"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == f"[00:00.3 → 00:02.4] {SENTENCE}\n"  # not a terminal: finals only
    assert fake.path.startswith("/waves/v1/stt/live?") and "word_timestamps=true" in fake.path
    assert fake.headers["Authorization"] == "Bearer k-first"
    assert {len(f) for f in fake.frames[:-1]} == {3200}
    assert sum(len(f) for f in fake.frames) == len(decode_file(speech))
    assert fake.controls == [{"type": "close_stream"}]
    assert "1 final(s)" in err


def test_a_server_error_exits_1_with_its_message(fake_server: Callable[[str], tuple[FakeLive, str]],
                                                 audio: AudioFactory, capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = fake_server("error")
    code = stream_client.main([str(audio.speech(SENTENCE)), "--url", url, "--speed", "25"])
    err = capsys.readouterr().err
    assert code == 1
    assert "invalid_audio: not linear16" in err
    assert len(fake.frames) < 5, "the client kept sending after the server closed"


def test_a_close_without_the_last_final_exits_1(fake_server: Callable[[str], tuple[FakeLive, str]],
                                                audio: AudioFactory, capsys: pytest.CaptureFixture[str]) -> None:
    _, url = fake_server("no_last")
    assert stream_client.main([str(audio.speech(SENTENCE)), "--url", url, "--speed", "25"]) == 1
    assert "before its last final" in capsys.readouterr().err


def test_a_refused_upgrade_exits_2_with_status_and_error(fake_server: Callable[[str], tuple[FakeLive, str]],
                                                         audio: AudioFactory,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    _, url = fake_server("refuse")
    assert stream_client.main([str(audio.speech(SENTENCE)), "--url", url, "--language", "xx"]) == 2
    assert "HTTP 400: language 'xx' is not served" in capsys.readouterr().err


def test_bad_file_exits_2_before_connecting(audio: AudioFactory, capsys: pytest.CaptureFixture[str]) -> None:
    assert stream_client.main([str(audio.random_bytes()), "--url", "ws://127.0.0.1:9"]) == 2
    assert "not audio" in capsys.readouterr().err


def test_unreachable_server_exits_1(audio: AudioFactory, capsys: pytest.CaptureFixture[str]) -> None:
    assert stream_client.main([str(audio.speech(SENTENCE)), "--url", "ws://127.0.0.1:9"]) == 1
    assert "could not open ws://127.0.0.1:9/waves/v1/stt/live" in capsys.readouterr().err


SINE = "lavfi:sine=frequency=440:sample_rate=16000"  # ffmpeg's test tone stands in for a microphone


def _mic_session(url: str) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[2]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HARK_")}, "PYTHONPATH": str(root)}
    return subprocess.Popen([sys.executable, "-m", "hark.cli", "stream", "--mic", "--device", SINE, "--url", url],
                            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_frames(fake: FakeLive, process: subprocess.Popen[str], count: int = 5) -> None:
    deadline = time.monotonic() + 20
    while len(fake.frames) < count and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert len(fake.frames) >= count, process.stderr.read() if process.poll() is not None else "no frames"  # type: ignore[union-attr]


def test_ctrl_c_ends_a_microphone_session_in_order(fake_server: Callable[[str], tuple[FakeLive, str]]) -> None:
    """Ctrl-C (SIGINT): the capture stops, close_stream goes out, the last final is awaited, exit 0."""
    fake, url = fake_server("clean")
    process = _mic_session(url)
    try:
        _wait_frames(fake, process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out == f"[00:00.3 → 00:02.4] {SENTENCE}\n"
    assert fake.controls == [{"type": "close_stream"}]
    assert {len(f) for f in fake.frames} == {3200}
    assert len(fake.frames) < 40, "a synthetic source must be paced like a device"


def test_a_second_ctrl_c_leaves_without_the_last_final(fake_server: Callable[[str], tuple[FakeLive, str]]) -> None:
    fake, url = fake_server("hang")
    process = _mic_session(url)
    try:
        _wait_frames(fake, process)
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while not fake.controls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.controls == [{"type": "close_stream"}]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
