"""Plain streaming HTTP(S) download of a checkpoint archive.

Kept in its own module behind one function, :func:`download`, so a ranged, resumable, parallel
downloader can replace it without touching the resolver.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import requests
import urllib3

from checkpoints.errors import FetchError
from checkpoints.progress import byte_progress
from checkpoints.urls import redact_url

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
#: (connect, read) timeouts in seconds; the read timeout catches a stalled connection.
DEFAULT_TIMEOUT = (15.0, 120.0)

_HINTS = {
    401: "the server wants credentials: check the user/password or token in the URL",
    403: "access denied: check the credentials, bucket policy, or whether a signed URL has expired",
    404: "no file at this address: check the path and the checkpoint file name",
}


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    progress: bool | None = None,
) -> Path:
    """Stream ``url`` into the file ``dest`` (overwritten) and return its path.

    Args:
        url: An ``http://`` or ``https://`` URL.
        dest: Where to write the body; put it on the cache volume so a later rename is atomic.
        timeout: (connect, read) timeouts in seconds.
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).

    Raises:
        FetchError: The host is unreachable, the server answers an error status, or the body ends
            before its announced length. The message names the URL with credentials redacted.
    """
    shown = redact_url(url)
    dest = Path(dest)
    headers = {"User-Agent": "hark-checkpoints", "Accept-Encoding": "identity"}
    received = 0
    try:
        with requests.get(url, stream=True, timeout=timeout, headers=headers) as response:
            if response.status_code >= 400:
                hint = _HINTS.get(response.status_code, "check the URL and that the server is healthy")
                raise FetchError(f"{shown} answered HTTP {response.status_code} {response.reason}: {hint}")
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            logger.info("downloading %s (%s bytes)", shown, expected if expected is not None else "unknown")
            with dest.open("wb") as out, byte_progress(f"downloading {dest.name}", expected, progress) as advance:
                for chunk in response.raw.stream(CHUNK_SIZE, decode_content=False):
                    out.write(chunk)
                    received += len(chunk)
                    advance(len(chunk))
    except FetchError:
        raise
    except requests.exceptions.ConnectionError as error:
        raise FetchError(
            f"cannot download {shown}: connection failed ({type(error).__name__}); check the host name, "
            "port and network access"
        ) from None
    except (requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError):
        raise FetchError(f"cannot download {shown}: the server stopped answering (timeout {timeout})") from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        # urllib3 errors (e.g. a body shorter than Content-Length) can quote the full URL: never show them raw.
        kind = type(error).__name__
        raise FetchError(f"cannot download {shown}: {kind} after {received} bytes; retry or check the server") from None
    if expected is not None and received != expected:
        raise FetchError(
            f"download of {shown} was truncated: got {received} of {expected} bytes; retry or check the server"
        )
    return dest
