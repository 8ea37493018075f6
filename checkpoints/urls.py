"""Checkpoint location strings: classification and redaction for messages and logs."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

#: Schemes this version can fetch. A plain path has no scheme.
SUPPORTED_SCHEMES = ("file", "http", "https", "s3")


def redact_url(url: str) -> str:
    """``url`` without credentials, query string or fragment, safe for logs and error messages.

    ``https://user:secret@host/m.tar?X-Amz-Signature=abc`` -> ``https://***@host/m.tar?***``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path (or a Windows drive letter)
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scheme_of(url: str) -> str:
    """The lowercase scheme, or ``""`` for a plain filesystem path."""
    parts = urlsplit(url)
    return "" if len(parts.scheme) <= 1 else parts.scheme.lower()


def local_path(url: str) -> Path:
    """The filesystem path of a plain path or ``file://`` URL (``~`` expanded, made absolute).

    Raises:
        ValueError: A ``file://`` URL names a remote host.
    """
    if scheme_of(url) == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URLs must name a local path (file:///abs/path), not host {parts.netloc!r}")
        return Path(unquote(parts.path)).expanduser().absolute()
    return Path(url).expanduser().absolute()


def file_name(url: str, default: str = "download") -> str:
    """The last path component of a URL (``.../whisper-hi.tar.gz?sig=1`` -> ``whisper-hi.tar.gz``)."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name if name and name not in (".", "..") and "/" not in name and "\x00" not in name else default
