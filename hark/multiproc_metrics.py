"""prometheus-client's multiprocess mode, set up the same way for the API tier and the worker host.

Both tiers are several processes behind one scrape target: ``hark api`` is a gunicorn master with
HARK_API_WORKERS forked workers, ``hark worker`` a supervisor with one child per checkpoint plus a
webhook child. A plain in-memory registry would show whichever process happened to answer, so every
process writes its samples to memory-mapped files in one directory (``PROMETHEUS_MULTIPROC_DIR``) and
the scrape merges them (:func:`scrape_registry`): counters and histograms are summed over every
process that ever ran (a restarted child does not reset a total), gauges declare how they merge
(``livesum`` for in-flight counts: only living processes count).

The parent of each group (``hark api`` before gunicorn forks, the supervisor before it starts its
children) calls :func:`prepare` once: it creates a fresh private directory, exports it to its future
children through the environment and removes directories left by dead groups. When a child exits, the
parent calls :func:`mark_dead` so its live gauges disappear; at exit :func:`remove` deletes the directory.
Without :func:`prepare` (tests, a single process) the metrics live in the default in-memory registry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, values
from prometheus_client.registry import Collector

from hark.proc import pid_alive

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Shared memory when the machine has it (the files are rewritten on every update).
SHM_DIR = Path("/dev/shm")  # noqa: S108
_DIR_RE = re.compile(r"^hark-metrics-[a-z]+-(\d+)-")


def _base_dir() -> Path:
    return SHM_DIR if SHM_DIR.is_dir() and os.access(SHM_DIR, os.W_OK) else Path(tempfile.gettempdir())


    return True


def _remove_stale(base: Path) -> None:
    """Delete directories of process groups whose parent is gone (a killed `hark api` or supervisor)."""
    for entry in base.glob("hark-metrics-*"):
        match = _DIR_RE.match(entry.name)
        if match and entry.stat().st_uid == os.getuid() and not pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def prepare(component: str) -> Path:
    """Create this process group's fresh, private metrics directory and switch to multiprocess mode.

    Call it in the parent before any child is started. Children inherit ``PROMETHEUS_MULTIPROC_DIR``.

    Args:
        component: ``api`` or ``worker`` (part of the directory name).

    Returns:
        The directory (mode 0700, empty).
    """
    base = _base_dir()
    with contextlib.suppress(OSError):
        _remove_stale(base)
    path = Path(tempfile.mkdtemp(prefix=f"hark-metrics-{component}-{os.getpid()}-", dir=base))
    os.environ[ENV] = str(path)
    # prometheus-client picks its value class when first imported; metrics created from now on must
    # write to the directory even if something imported the library before this call.
    values.ValueClass = values.get_value_class()
    log.debug("metrics of this %s are aggregated across processes in %s", component, path)
    return path


def directory() -> Path | None:
    """The multiprocess directory of this process group, or None in single-process mode."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def mark_dead(pid: int) -> None:
    """Forget the live gauges of a child that exited (its counters keep counting in the totals)."""
    path = directory()
    if path is not None:
        multiprocess.mark_process_dead(pid, str(path))


def remove(path: Path) -> None:
    """Delete the directory at the end of the process group."""
    shutil.rmtree(path, ignore_errors=True)
    if os.environ.get(ENV) == str(path):
        del os.environ[ENV]


class _Forward(Collector):
    """Everything of another registry (the default one, in single-process mode)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterable:
        return self.source.collect()


def scrape_registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """A registry for one scrape: every process's samples merged, plus `extra` collectors.

    Args:
        extra: Collectors computed at scrape time in the scraping process (e.g. queue depths).
    """
    registry = CollectorRegistry(auto_describe=False)
    path = directory()
    if path is not None:
        multiprocess.MultiProcessCollector(registry, str(path))
    else:
        registry.register(_Forward(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return registry
