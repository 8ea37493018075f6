"""`hark stream FILE` / `hark stream --mic`: live transcription of a file or the microphone through a running API.

The audio goes over the WebSocket ``/waves/v1/stt/live`` in frames of 100 ms (a file at real-time pace,
``--speed N`` for N times faster); partial transcripts show in place on a terminal and finals line by line.
At the end of the audio (or on Ctrl-C) the client sends ``close_stream`` and waits for the last final.

Exit status: 0 after the last final and a normal close (1000); 1 when the server sent an error or closed
otherwise, or could not be reached; 2 for a bad file, no capture device, or a refused upgrade (its HTTP
status and error are printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from hark.sessions import CLOSE_NORMAL, SAMPLE_RATES
from hark.settings import ConfigError, load_settings
from hark.stream_display import Printer
from hark.stream_source import (
    BYTES_PER_SAMPLE,
    CLI_ENCODINGS,
    AudioSourceError,
    Microphone,
    decode_file,
    encode_pcm,
    frame_bytes,
    frames,
    parse_device,
)

LIVE_PATH = "/waves/v1/stt/live"
#: Seconds to wait for the upgrade (the API waits up to HARK_STREAM_START_TIMEOUT_SECONDS for a worker).
OPEN_TIMEOUT = 60.0
#: Largest message accepted from the server (the Pulse contract: 1 MiB).
MAX_MESSAGE_BYTES = 2**20

EXIT_OK, EXIT_SESSION, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hark stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", type=Path, help="audio file (wav, mp3, flac, ogg, m4a, webm, aac)")
    source.add_argument("--mic", action="store_true", help="capture the default microphone (ffmpeg) until Ctrl-C")
    parser.add_argument("--device", type=_device, metavar="FORMAT:NAME",
                        help="capture device for --mic, as ffmpeg names it (default: pulse:default, then "
                             "alsa:default; e.g. alsa:hw:1)")  # fmt: skip
    parser.add_argument("--url", help=f"API base URL or full WebSocket URL (default ws://127.0.0.1:$HARK_API_PORT"
                                      f"{LIVE_PATH})")  # fmt: skip
    parser.add_argument("--language", default="en", help="ISO 639-1 code, or multi for detection (default en)")
    parser.add_argument("--encoding", default="linear16", choices=CLI_ENCODINGS, help="what to send (default linear16)")
    parser.add_argument("--sample-rate", type=int, default=16000, choices=SAMPLE_RATES, metavar="HZ",
                        help="rate to send at (default 16000)")  # fmt: skip
    parser.add_argument("--speed", type=_positive, default=1.0, metavar="N",
                        help="send a file N times faster than real time (default 1)")  # fmt: skip
    parser.add_argument("--word-timestamps", action="store_true", help="ask for words with their times")
    parser.add_argument("--eou-timeout-ms", type=int, metavar="MS", help="silence that ends an utterance")
    parser.add_argument("--vad-events", action="store_true", help="ask for speech_started / speech_ended events")
    parser.add_argument("--json", action="store_true", help="print every server message as a JSON line")
    parser.add_argument("--timeout", type=_positive, default=60.0, metavar="S",
                        help="seconds to wait for the last final after close_stream (default 60)")  # fmt: skip
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def _device(text: str) -> tuple[str, str]:
    try:
        return parse_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device and not args.mic:
        parser.error("--device goes with --mic")
    return args


def query(args: argparse.Namespace) -> dict[str, str]:
    """The session's query parameters (what the SDK's helper sends, plus the options asked for)."""
    params = {"model": "pulse", "language": args.language, "sample_rate": str(args.sample_rate),
              "encoding": args.encoding}  # fmt: skip
    if args.word_timestamps:
        params["word_timestamps"] = "true"
    if args.eou_timeout_ms is not None:
        params["eou_timeout_ms"] = str(args.eou_timeout_ms)
    if args.vad_events:
        params["vad_events"] = "true"
    return params


def live_url(base: str | None, port: int, params: dict[str, str]) -> str:
    """The WebSocket URL: `base` (http(s) or ws(s); the live path added when it has none) or the local API."""
    parts = urllib.parse.urlsplit(base or f"ws://127.0.0.1:{port}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"--url must be an http(s):// or ws(s):// URL, not {base!r}")
    path = parts.path if parts.path not in ("", "/") else LIVE_PATH
    merged = {**dict(urllib.parse.parse_qsl(parts.query)), **params}
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, urllib.parse.urlencode(merged), ""))


def refusal_text(error: InvalidStatus) -> str:
    """``HTTP 400: <the JSON error>`` of a refused upgrade."""
    response = error.response
    body = bytes(response.body or b"")
    try:
        payload = json.loads(body)
        message = payload.get("error", payload) if isinstance(payload, dict) else payload
    except ValueError:
        message = body.decode(errors="replace").strip()[:500] or response.reason_phrase
    return f"HTTP {response.status_code}: {message}"


# --- one session ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How the session ended, as the receiving side saw it."""

    last_final: bool = False
    error: str | None = None
    close_code: int | None = None
    close_reason: str = ""
    session_id: str | None = None


class Receiver(threading.Thread):
    """Reads the server's messages until the socket closes, printing them and noting the outcome."""

    def __init__(self, connection: ClientConnection, printer: Printer) -> None:
        super().__init__(name="hark-stream-receiver", daemon=True)
        self.connection = connection
        self.printer = printer
        self.outcome = Outcome()

    def run(self) -> None:
        outcome = self.outcome
        try:
            while True:
                raw = self.connection.recv()
                message = json.loads(raw)
                if not isinstance(message, dict):
                    continue
                outcome.session_id = outcome.session_id or message.get("session_id")
                self.printer.handle(message)
                if message.get("type") == "error" and outcome.error is None:
                    outcome.error = f"{message.get('status', 'error')}: {message.get('message', '')}"
                if message.get("type") == "transcription" and message.get("is_last"):
                    outcome.last_final = True
        except ConnectionClosed as closed:
            received = closed.rcvd
            outcome.close_code = received.code if received is not None else 1006
            outcome.close_reason = received.reason if received is not None else "no close frame"
        except ValueError as error:
            outcome.error = f"invalid_message: the server sent a message that is not JSON ({error})"
            with contextlib.suppress(Exception):
                self.connection.close()
        finally:
            self.printer.clear()


@dataclass
class Progress:
    sent_bytes: int = 0


def send_audio(connection: ClientConnection, chunks: Iterator[bytes], stop: threading.Event, progress: Progress,
               bytes_per_second: float | None = None) -> None:  # fmt: skip
    """Send `chunks` as binary frames (paced to `bytes_per_second` when given) until done or `stop`."""
    started = time.monotonic()
    for chunk in chunks:
        if stop.is_set():
            break
        connection.send(chunk)
        progress.sent_bytes += len(chunk)
        if bytes_per_second:
            delay = started + progress.sent_bytes / bytes_per_second - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break


def exit_status(outcome: Outcome, err: Any) -> int:
    """0 for a clean end (last final, close 1000); else print why and 1."""
    if outcome.error:
        print(f"hark stream: the server reported an error: {outcome.error}", file=err)
        return EXIT_SESSION
    if outcome.close_code != CLOSE_NORMAL:
        reason = f" ({outcome.close_reason})" if outcome.close_reason else ""
        print(f"hark stream: the connection closed with code {outcome.close_code}{reason}", file=err)
        return EXIT_SESSION
    if not outcome.last_final:
        print("hark stream: the session closed before its last final (is_last)", file=err)
        return EXIT_SESSION
    return EXIT_OK


# --- the command ----------------------------------------------------------------------------------


def _prepare_source(args: argparse.Namespace) -> tuple[Iterator[bytes], float | None, Microphone | None, str]:
    """(chunks to send, pacing in bytes/s or None, the microphone if any, a description); raises AudioSourceError."""
    if args.mic:
        mic = Microphone(args.sample_rate, (args.device,) if args.device else None).open()
        chunks = (encode_pcm(chunk, args.encoding) for chunk in mic.chunks())
        return chunks, None, mic, f"microphone ({mic.name})"
    pcm = decode_file(args.file, args.sample_rate)
    data = encode_pcm(pcm, args.encoding)
    seconds = len(pcm) / 2 / args.sample_rate
    per_second = args.sample_rate * BYTES_PER_SAMPLE[args.encoding] * args.speed
    chunks = frames(data, frame_bytes(args.sample_rate, args.encoding))
    return chunks, per_second, None, f"{args.file} ({seconds:.1f} s)"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except KeyboardInterrupt:  # before the session is open (or a second Ctrl-C): leave at once
        print("hark stream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_INPUT
    try:
        url = live_url(args.url, settings.api_port, query(args))
    except ValueError as error:
        print(f"hark stream: {error}", file=sys.stderr)
        return EXIT_INPUT
    try:
        chunks, pace, mic, what = _prepare_source(args)
    except AudioSourceError as error:
        print(f"hark stream: {error}", file=sys.stderr)
        return EXIT_INPUT
    headers = {"Authorization": f"Bearer {settings.api_key_list[0]}"} if settings.api_key_list else {}
    try:
        return _run(args, url, headers, chunks, pace, mic, what)
    finally:
        if mic is not None:
            mic.stop()


def _run(args: argparse.Namespace, url: str, headers: dict[str, str], chunks: Iterator[bytes], pace: float | None,
         mic: Microphone | None, what: str) -> int:  # fmt: skip
    err = sys.stderr
    try:
        connection = connect(url, additional_headers=headers, open_timeout=OPEN_TIMEOUT, max_size=MAX_MESSAGE_BYTES)
    except InvalidStatus as error:
        print(f"hark stream: the server refused the session: {refusal_text(error)}", file=err)
        return EXIT_INPUT
    except InvalidURI as error:
        print(f"hark stream: {error}", file=err)
        return EXIT_INPUT
    except (OSError, TimeoutError, InvalidHandshake) as error:
        print(f"hark stream: could not open {url.split('?')[0]}: {error}", file=err)
        return EXIT_SESSION
    tty = sys.stdout.isatty()
    printer = Printer(sys.stdout, err, tty=tty, as_json=args.json)
    receiver = Receiver(connection, printer)
    receiver.start()
    if err.isatty():
        print(f"streaming {what}: Ctrl-C to stop", file=err)
    stop = threading.Event()
    progress = Progress()
    try:
        try:
            send_audio(connection, _until_closed(chunks, receiver), stop, progress, pace)
        except KeyboardInterrupt:
            stop.set()
        except ConnectionClosed:
            pass  # the receiver has the close code and says why
        if mic is not None:
            mic.stop()
        if receiver.is_alive():
            with contextlib.suppress(ConnectionClosed):
                connection.send(json.dumps({"type": "close_stream"}))
        receiver.join(args.timeout)
    except KeyboardInterrupt:  # a second Ctrl-C: leave without waiting for the last final
        connection.close()
        raise
    if receiver.is_alive():
        connection.close()
        receiver.join(5)
        print(f"hark stream: no last final within {args.timeout:g} s of close_stream", file=err)
        return EXIT_SESSION
    outcome = receiver.outcome
    status = exit_status(outcome, err)
    if not args.json:
        print(f"[{outcome.session_id or 'no session id'} · {printer.finals} final(s) · "
              f"{progress.sent_bytes / 1000:.0f} kB of audio sent]", file=err)  # fmt: skip
    return status


def _until_closed(chunks: Iterator[bytes], receiver: Receiver) -> Iterator[bytes]:
    """`chunks`, ending early once the server has closed the session."""
    for chunk in chunks:
        if not receiver.is_alive():
            return
        yield chunk
