"""HTTP(S) sources: probe with a one-byte range request, then parallel ranged, resumable downloads.

The probe is a ``GET`` with ``Range: bytes=0-0`` rather than a ``HEAD``: presigned object-store URLs
are signed for one method, and a ``206`` answer proves range support and gives the total size in
``Content-Range`` at once. A server that answers ``200`` is downloaded in one plain stream.
Redirects are followed, except from https to http (see :mod:`checkpoints.redirects`).

Nothing here ever puts a raw URL into a message: ``requests``/``urllib3`` exceptions can quote the
full URL (credentials, signatures), so only their type is shown, next to the redacted URL.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import urllib3

from checkpoints.errors import FetchError
from checkpoints.options import FetchOptions
from checkpoints.redirects import HOOKS
from checkpoints.sources import FileJob, RangeSource, RemoteInfo, TransientError, with_retries
from checkpoints.transfer import transfer
from checkpoints.urls import redact_url

logger = logging.getLogger(__name__)

#: (connect, read) timeouts in seconds; the read timeout catches a stalled connection.
DEFAULT_TIMEOUT = (15.0, 120.0)
HEADERS = {"User-Agent": "hark-checkpoints", "Accept-Encoding": "identity"}
#: Largest manifest.json accepted from a server (a real one is a few kB).
MAX_SMALL_FILE = 4 * 1024 * 1024

_HINTS = {
    401: "the server wants credentials: check the user/password or token in the URL",
    403: "access denied: check the credentials, bucket policy, or whether a signed URL has expired",
    404: "no file at this address: check the path and the checkpoint file name",
    410: "the file is gone from the server: check the URL",
}
#: Status codes worth retrying (the others >= 400 are permanent).
_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _status_error(shown: str, response: requests.Response) -> Exception:
    status = response.status_code
    message = f"{shown} answered HTTP {status} {response.reason}"
    if status in _TRANSIENT:
        return TransientError(f"HTTP {status} {response.reason}")
    return FetchError(f"{message}: {_HINTS.get(status, 'check the URL and that the server is healthy')}")


def _network_error(shown: str, error: Exception) -> Exception:
    """A safe exception for a network failure (never the exception's own text: it can quote the URL)."""
    kind = type(error).__name__
    if isinstance(error, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema
                  | requests.exceptions.InvalidSchema):  # fmt: skip
        return FetchError(f"{shown} is not a valid URL ({kind})")
    text = str(error)
    if isinstance(error, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError) or (
        "Read timed out" in text
    ):
        return TransientError("the connection stalled (no data within the stall timeout)")
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return TransientError(f"connection timed out ({kind}); check the host name, port and network access")
    if isinstance(error, requests.exceptions.ConnectionError) and (
        "NewConnectionError" in text or "NameResolution" in text or "Failed to resolve" in text
    ):
        return TransientError(f"connection failed ({kind}); check the host name, port and network access")
    if isinstance(error, urllib3.exceptions.ProtocolError) or "IncompleteRead" in text:
        return TransientError(f"the body was truncated: the connection was cut before the end ({kind})")
    return TransientError(f"the connection failed or was cut ({kind})")


class HttpSource:
    """One file on an HTTP(S) server."""

    def __init__(self, url: str, options: FetchOptions) -> None:
        self.url = url
        self.shown = redact_url(url)
        self._timeout = (options.connect_timeout, options.stall_timeout)
        self._chunk = options.chunk_size

    def probe(self) -> RemoteInfo:
        """Size, range support and validator of the file."""
        try:
            response = requests.get(self.url, headers={**HEADERS, "Range": "bytes=0-0"}, stream=True,
                                    timeout=self._timeout, hooks=HOOKS)  # fmt: skip
        except requests.exceptions.RequestException as error:
            raise _network_error(self.shown, error) from None
        with response:
            if response.status_code == 416:  # an empty file
                return RemoteInfo(size=0, ranges=False, validator=_validator(response))
            if response.status_code >= 400:
                raise _status_error(self.shown, response)
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if response.status_code == 206 and match and match.group(3) != "*":
                return RemoteInfo(size=int(match.group(3)), ranges=True, validator=_validator(response))
            length = response.headers.get("Content-Length", "")
            return RemoteInfo(size=int(length) if length.isdigit() else None, ranges=False,
                              validator=_validator(response))  # fmt: skip

    @contextmanager
    def stream(self, start: int, end: int | None) -> Iterator[Iterable[bytes]]:
        """Bytes ``start..end`` of the file (the whole body when ``start == 0`` and ``end`` is None)."""
        ranged = start > 0 or end is not None
        headers = dict(HEADERS)
        if ranged:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = requests.get(self.url, headers=headers, stream=True, timeout=self._timeout, hooks=HOOKS)
        except requests.exceptions.RequestException as error:
            raise _network_error(self.shown, error) from None
        with response:
            if response.status_code >= 400:
                raise _status_error(self.shown, response)
            if ranged and response.status_code != 206:
                raise FetchError(
                    f"{self.shown} ignored a byte-range request (HTTP {response.status_code}) although it "
                    "announced range support; set MODEL_DOWNLOAD_WORKERS=1 and MODEL_DOWNLOAD_RESUME=false, or "
                    "fix the server"
                )
            yield self._chunks(response)

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        try:
            yield from response.raw.stream(self._chunk, decode_content=False)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            raise _network_error(self.shown, error) from None


def _validator(response: requests.Response) -> str | None:
    return response.headers.get("ETag") or response.headers.get("Last-Modified")


def child_url(base: str, name: str) -> str:
    """The URL of file ``name`` inside the directory URL ``base`` (its query string, if any, kept)."""
    parts = urlsplit(base)
    path = parts.path if parts.path.endswith("/") else parts.path.rsplit("/", 1)[0] + "/"
    return urlunsplit((parts.scheme, parts.netloc, path + quote(name), parts.query, ""))


def read_small(source: RangeSource, options: FetchOptions, deadline: float, limit: int = MAX_SMALL_FILE) -> bytes:
    """The whole (small) file of ``source`` in memory, with retries; refuses more than ``limit`` bytes."""

    def read() -> bytes:
        data = bytearray()
        with source.stream(0, None) as chunks:
            for chunk in chunks:
                data += chunk
                if len(data) > limit:
                    raise FetchError(f"{source.shown} is larger than {limit} bytes; it is not a manifest.json")
        return bytes(data)

    result = with_retries(read, source.shown, options, deadline)
    assert isinstance(result, bytes)
    return result


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    progress: bool | None = None,
    options: FetchOptions | None = None,
) -> Path:
    """Download ``url`` into the file ``dest`` (parallel ranges when the server allows; resumable).

    Args:
        url: An ``http://`` or ``https://`` URL.
        dest: Where to write the body; put it on the cache volume so a later rename is atomic. An
            interrupted earlier download of the same file beside it (``dest.part``...) is resumed.
        timeout: (connect, stall) timeouts in seconds, used when ``options`` is not given.
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).
        options: Workers, retries, resume, overall timeout.

    Raises:
        FetchError: The host is unreachable, the server answers an error status, or the body ends
            before its announced length (after retries). The message names the URL with credentials
            redacted.
    """
    if options is None:
        options = FetchOptions(connect_timeout=timeout[0], stall_timeout=timeout[1])
    dest = Path(dest)
    source = HttpSource(url, options)
    transfer([FileJob(source, dest)], options, label=f"downloading {dest.name}", progress=progress,
             deadline=time.monotonic() + options.timeout)  # fmt: skip
    return dest
