"""Helpers shared by the checkpoint tests: fake model directories and a counting local HTTP server.

(No tests here; named test_checkpoints_* so it sits with the tests it serves.)
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from checkpoints.pack import pack

ENGINE_FILES = {
    "model.bin": os.urandom(200_000),
    "config.json": b'{"alignment_heads": [], "lang_ids": []}',
    "tokenizer.json": b'{"model": {}}',
    "vocabulary.txt": b"a\nb\nc\n",
}


def make_model_dir(root: Path, files: dict[str, bytes] | None = None, name: str = "model") -> Path:
    """A fake faster-whisper model directory (right file names, fake bytes)."""
    directory = root / name
    directory.mkdir(parents=True)
    for rel, data in (ENGINE_FILES if files is None else files).items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
    return directory


def make_checkpoint(root: Path, name: str = "fake-en", version: str = "1.0.0", languages: str = "en",
                    output: str | None = None, model_files: dict[str, bytes] | None = None) -> Path:  # fmt: skip
    """Pack a fake model into ``root/<output>`` (a directory, or an archive by suffix)."""
    model = make_model_dir(root, model_files, name=f"src-{name}-{version}-{output or 'dir'}")
    target = root / (output or f"{name}-{version}")
    return pack(model, target, name=name, version=version, languages=languages, progress=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_with(members: list[tuple[tarfile.TarInfo, bytes | None]], path: Path) -> Path:
    """Write a tar archive holding exactly ``members`` (raw TarInfo, so malicious ones are possible)."""
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


class _Handler(http.server.SimpleHTTPRequestHandler):
    counts: Counter
    truncate: set[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.counts[path] += 1
        if path in self.truncate:
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@contextmanager
def file_server(directory: Path, truncate: tuple[str, ...] = ()) -> Iterator[tuple[str, Counter]]:
    """Serve ``directory`` over HTTP on 127.0.0.1; yields (base URL, GET counts per path)."""
    counts: Counter = Counter()
    handler = type("Handler", (_Handler,), {"counts": counts, "truncate": set(truncate)})

    def factory(*args: object, **kwargs: object) -> http.server.BaseHTTPRequestHandler:
        return handler(*args, directory=str(directory), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
