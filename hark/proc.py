"""Children that die with their parent: ``prctl(PR_SET_PDEATHSIG)`` on Linux.

``hark run`` and the worker supervisor start long-lived children (the API's gunicorn, the worker,
a private redis-server, the per-checkpoint Celery processes). A parent that is SIGKILLed (OOM
killer, ``kill -9``, a crashed terminal) runs no clean-up, so without this its children keep the
port and the queues. With the parent-death signal set in the child between fork and exec (it
survives exec), the kernel signals the child as soon as the parent is gone, even while the child is
still loading models.

Caveat (Linux semantics): the signal fires when the *thread* that forked the child exits, so spawn
from a thread that lives as long as the process (the main thread, as both callers do).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

#: linux/prctl.h
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True) if sys.platform == "linux" else None


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies.

    Returns:
        True when set (Linux); False elsewhere, where nothing is done.
    """
    if _libc is None:
        return False
    if _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    return True


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets `sig` when this process dies.

    The parent may die between fork and the ``prctl`` call; the child then already has a new parent,
    which the check against the pid captured here notices, and it signals itself at once.

    Args:
        sig: the signal the child receives (SIGTERM lets it shut down gracefully).

    Returns:
        A function to pass as ``preexec_fn``; it only calls async-signal-safe libc functions.
    """
    parent = os.getpid()

    def _preexec() -> None:
        if set_parent_death_signal(sig) and os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return _preexec


def pid_alive(pid: int) -> bool:
    """True while a process `pid` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
