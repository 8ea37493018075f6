"""`hark transcribe FILE`: send an audio file to a running Hark API and print the transcript."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import requests

from hark.settings import ConfigError, load_settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hark transcribe", description=__doc__)
    parser.add_argument("file", type=Path, help="audio file (wav, mp3, flac, ogg, m4a, webm, aac)")
    parser.add_argument("--url", help="API base URL (default http://127.0.0.1:$HARK_API_PORT)")
    parser.add_argument("--language", default="en", help="ISO 639-1 code, or multi for detection")
    parser.add_argument("--model", default="pulse", help="pulse, pulse-pro or a checkpoint name")
    parser.add_argument("--word-timestamps", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the whole JSON answer")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if not args.file.is_file():
        print(f"no such file: {args.file}", file=sys.stderr)
        return 2

    base_url = (args.url or f"http://127.0.0.1:{settings.api_port}").rstrip("/")
    headers = {"Content-Type": "application/octet-stream"}
    if settings.api_key_list:
        headers["Authorization"] = f"Bearer {settings.api_key_list[0]}"
    params = {"model": args.model, "language": args.language,
              "word_timestamps": "true" if args.word_timestamps else "false"}
    try:
        with args.file.open("rb") as body:
            answer = requests.post(f"{base_url}/waves/v1/stt/", params=params, headers=headers,
                                   data=body, timeout=args.timeout)
    except requests.RequestException as error:
        print(f"could not reach {base_url}: {error}", file=sys.stderr)
        return 1
    try:
        payload = answer.json()
    except ValueError:
        print(f"HTTP {answer.status_code}: {answer.text[:500]}", file=sys.stderr)
        return 1
    if answer.status_code != 200:
        print(f"HTTP {answer.status_code}: {payload.get('error', payload)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        meta = payload.get("metadata", {})
        print(payload.get("transcription", ""))
        print(f"[{payload.get('language')} · {meta.get('checkpoint', '?')} · "
              f"{meta.get('duration', 0):.1f} s audio in {meta.get('processing_time_ms', 0):.0f} ms]",
              file=sys.stderr)
    return 0
