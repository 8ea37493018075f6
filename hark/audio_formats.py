"""The containers Hark accepts: one allow-list shared by the API probe and the worker decoder.

FFmpeg picks a demuxer by sniffing the bytes, and some demuxers do I/O of their own: ``sdp`` binds UDP
ports and waits for RTP, ``concat``/``ffconcat`` and ``hls`` open the files or URLs the body names,
``image2`` globs paths. An upload must only ever reach demuxers that read the bytes they are given, so
both tiers pass :func:`open_options` to ``av.open``: FFmpeg's ``format_whitelist`` refuses any other
demuxer *before* it reads a header (an ``EINVAL`` from ``avformat_open_input``), and an empty-matching
``protocol_whitelist`` makes any nested open fail even if a whitelisted demuxer tried one. The format
actually opened is checked again with :func:`is_allowed`.

Pure data and helpers: no FFmpeg import here, so the core stays importable everywhere.
"""

from __future__ import annotations

#: FFmpeg demuxer names (``ffmpeg -demuxers``) of the formats the README promises. Each demuxer reads
#: only the bytes it is given. ``mov`` covers mp4/m4a/mov/3gp, ``matroska`` covers webm, ``aac`` is
#: raw ADTS (a frame-sync scanner, no side channel).
ALLOWED_DEMUXERS: tuple[str, ...] = ("wav", "mp3", "flac", "ogg", "mov", "matroska", "aac")

#: What the error message and the docs call them.
ALLOWED_DESCRIPTION = "wav, mp3, flac, ogg/opus, m4a/mp4/mov, webm/mkv, aac (adts)"

#: The machine-readable code of the 400 answer for any other container.
UNSUPPORTED_CONTAINER = "unsupported_container"

#: A protocol name FFmpeg does not have: with it as the whitelist every nested open fails.
_NO_PROTOCOL = "none"


def format_whitelist() -> str:
    """The value of FFmpeg's ``format_whitelist`` option (comma-separated demuxer names)."""
    return ",".join(ALLOWED_DEMUXERS)


def open_options(**extra: str) -> dict[str, str]:
    """Options for ``av.open(..., options=...)`` that keep FFmpeg inside the allow-list.

    Args:
        **extra: Further AVFormatContext options (e.g. ``probesize``).

    Returns:
        ``format_whitelist``, ``protocol_whitelist`` and `extra`.
    """
    return {"format_whitelist": format_whitelist(), "protocol_whitelist": _NO_PROTOCOL, **extra}


def is_allowed(format_name: str | None) -> bool:
    """True when an opened container's ``format.name`` is one of :data:`ALLOWED_DEMUXERS`.

    FFmpeg names some demuxers by several comma-separated aliases (``"mov,mp4,m4a,3gp,3g2,mj2"``,
    ``"matroska,webm"``); the demuxer is allowed when one alias is on the list, as FFmpeg's own check does.
    """
    if not format_name:
        return False
    return any(alias.strip() in ALLOWED_DEMUXERS for alias in format_name.split(","))


def unsupported_message(found: str | None = None) -> str:
    """The error message for a container outside the allow-list (`found`: its name, when known)."""
    what = f"the {found.split(',')[0]} container" if found else "this container"
    return f"{what} is not accepted: send one of {ALLOWED_DESCRIPTION}"
