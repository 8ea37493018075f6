"""Where and how a checkpoint runs: device, compute type, inference lanes, CPU threads, GPU budget.

The decisions are pure functions of their inputs (device count, free memory, core count...), so the
CUDA branches are tested on a CPU-only machine by passing numbers in; the few functions that ask the
hardware (:func:`cuda_device_count`, :func:`gpu_memory_info`) are thin and separate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CUDA_ALLOC_ENV = "PYTORCH_CUDA_ALLOC_CONF"

#: Runtime GPU memory of a model ≈ size of model.bin × this (weights, encoder/decoder buffers, KV cache).
GPU_MEMORY_FACTOR = 1.6
#: Extra memory each additional inference lane (a CTranslate2 replica's workspace) is planned to use.
GPU_LANE_OVERHEAD_BYTES = 256 * 1024 * 1024

#: Compute types that only make sense on a GPU, and what a CPU runs instead.
_CPU_REPLACEMENTS: dict[str, str] = {
    "float16": "int8",
    "bfloat16": "int8",
    "int8_float16": "int8",
    "int8_bfloat16": "int8",
}
#: Preference order when a device does not support the asked type.
_FALLBACKS: dict[str, tuple[str, ...]] = {
    "cpu": ("int8", "int8_float32", "float32"),
    "cuda": ("float16", "int8_float16", "int8_float32", "int8", "float32"),
}
_PASS_THROUGH = frozenset({"default", "auto"})


class DeviceError(RuntimeError):
    """The requested device or memory budget cannot be satisfied; the message says what to change."""


@dataclass(frozen=True)
class DevicePlan:
    """How one checkpoint is run in its worker child."""

    device: str
    """``cpu`` or ``cuda``."""
    compute_type: str
    lanes: int
    """Inference calls that may run at once (CTranslate2 ``num_workers``)."""
    cpu_threads: int
    """CTranslate2 intra-op threads per lane."""


# --- hardware queries (thin) ------------------------------------------------------------------------


def cuda_device_count() -> int:
    """CUDA devices CTranslate2 can use (0 when none, or when CTranslate2 has no CUDA support)."""
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # a broken driver means "no GPU", not a crash
        logger.debug("CUDA device query failed", exc_info=True)
        return 0


def supported_compute_types(device: str) -> frozenset[str] | None:
    """Compute types CTranslate2 supports on `device` (None when it cannot tell)."""
    try:
        import ctranslate2

        return frozenset(ctranslate2.get_supported_compute_types(device))
    except Exception:
        logger.debug("compute type query failed for %s", device, exc_info=True)
        return None


def cpu_count() -> int:
    """Cores this process may run on (respects CPU affinity / cgroup cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def gpu_memory_info(device_index: int = 0) -> tuple[int, int] | None:
    """``(free, total)`` bytes of a CUDA device via torch, or None when torch sees no GPU.

    Call :func:`apply_cuda_alloc_conf` first: torch reads ``PYTORCH_CUDA_ALLOC_CONF`` at import.
    """
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info(device_index)
        return int(free), int(total)
    except Exception:
        logger.warning("could not read GPU memory; skipping the memory budget check", exc_info=True)
        return None


# --- decisions (pure) -------------------------------------------------------------------------------


def select_device(requested: str, cuda_devices: int) -> str:
    """Resolve ``HARK_DEVICE``.

    Args:
        requested: ``auto``, ``cpu`` or ``cuda``.
        cuda_devices: Number of visible CUDA devices.

    Returns:
        ``cuda`` or ``cpu``.

    Raises:
        DeviceError: ``cuda`` was asked for but no device is visible.
    """
    requested = requested.lower()
    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if cuda_devices < 1:
            raise DeviceError(
                "HARK_DEVICE=cuda but no CUDA device is visible (check the driver, CUDA_VISIBLE_DEVICES "
                "and the container's GPU reservation), or set HARK_DEVICE=auto to fall back to the CPU"
            )
        return "cuda"
    if requested == "auto":
        return "cuda" if cuda_devices > 0 else "cpu"
    raise DeviceError(f"HARK_DEVICE must be auto, cpu or cuda (got {requested!r})")


def select_compute_type(
    device: str,
    requested: str | None,
    manifest_default: str,
    supported: Iterable[str] | None = None,
) -> str:
    """The compute type to load a checkpoint with.

    ``HARK_COMPUTE_TYPE`` wins over the manifest's ``default_compute_type``. Half-precision types
    make no sense on a CPU and become ``int8``; a type the device does not support (when
    `supported` is known) falls back along a fixed preference list.

    Args:
        device: ``cpu`` or ``cuda``.
        requested: ``HARK_COMPUTE_TYPE`` or None.
        manifest_default: The checkpoint's ``default_compute_type``.
        supported: What CTranslate2 supports on `device`, if known.

    Returns:
        A CTranslate2 compute type.
    """
    chosen = (requested or manifest_default or "default").strip().lower()
    if chosen in _PASS_THROUGH:
        return chosen
    if device == "cpu":
        chosen = _CPU_REPLACEMENTS.get(chosen, chosen)
    if supported is None:
        return chosen
    available = set(supported)
    if chosen in available:
        return chosen
    for candidate in _FALLBACKS.get(device, ()):
        if candidate in available:
            logger.warning("compute type %s is not supported on %s; using %s", chosen, device, candidate)
            return candidate
    return "default"


def inference_lanes(device: str, engine_workers: int) -> int:
    """Parallel inference calls per checkpoint: ``HARK_ENGINE_WORKERS``, or 2 on CPU / 1 on GPU."""
    if engine_workers > 0:
        return engine_workers
    return 2 if device == "cpu" else 1


def threads_per_lane(cpu_threads: int, cores: int, lanes: int, checkpoints: int = 1) -> int:
    """CTranslate2 threads per lane: ``HARK_CPU_THREADS``, else the cores shared by every lane.

    Every lane of every checkpoint of the worker runs on the same cores, so the default divides
    them all: ``max(1, cores // (lanes × checkpoints))``. Giving every lane all the cores instead (a lone
    request on every core) was measured: no faster alone and 25 % slower under load on 2 cores
    (oversubscribed replicas; docs/scheduler.md), so the cores stay split.
    """
    if cpu_threads > 0:
        return cpu_threads
    return max(1, cores // max(1, lanes * max(1, checkpoints)))


#: Largest batch the automatic CUDA sizing picks (the encoder's gain flattens well before).
MAX_AUTO_BATCH = 16
#: Per-item GPU memory assumed when it cannot be measured (a 30 s window through a large model).
DEFAULT_ITEM_BYTES = 192 * 1024 * 1024


def batch_size(device: str, requested: int, *, free_bytes: int | None = None, item_bytes: int | None = None,
               fraction: float = 0.5, cap: int = MAX_AUTO_BATCH) -> int:  # fmt: skip
    """Requests per batched engine call: ``HARK_MAX_BATCH``, else 1 on CPU, else from GPU memory.

    On CUDA the batch is what `fraction` of the free memory (``torch.cuda.mem_get_info`` after the model
    is loaded and warmed up) holds at `item_bytes` per item (measured by the engine, or
    :data:`DEFAULT_ITEM_BYTES`), within ``1..cap``. On a CPU a batch was measured to cost more per item
    than running the items one after another, so it stays 1.
    """
    if requested > 0:
        return requested
    if device != "cuda" or free_bytes is None:
        return 1
    per_item = item_bytes if item_bytes and item_bytes > 0 else DEFAULT_ITEM_BYTES
    return max(1, min(cap, int(free_bytes * fraction) // per_item))


def plan_device(
    *,
    requested_device: str,
    requested_compute_type: str | None,
    manifest_default: str,
    engine_workers: int,
    cpu_threads: int,
    cuda_devices: int,
    cores: int,
    checkpoints: int = 1,
    supported: Iterable[str] | None = None,
) -> DevicePlan:
    """Every device decision for one checkpoint, from settings and hardware facts.

    Args:
        requested_device: ``HARK_DEVICE``.
        requested_compute_type: ``HARK_COMPUTE_TYPE`` or None.
        manifest_default: The checkpoint's ``default_compute_type``.
        engine_workers: ``HARK_ENGINE_WORKERS`` (0 = default).
        cpu_threads: ``HARK_CPU_THREADS`` (0 = default).
        cuda_devices: Visible CUDA devices.
        cores: Usable CPU cores.
        checkpoints: Checkpoints the worker serves (they share the cores).
        supported: Compute types supported on the chosen device, if known.

    Returns:
        The plan.
    """
    device = select_device(requested_device, cuda_devices)
    lanes = inference_lanes(device, engine_workers)
    return DevicePlan(
        device=device,
        compute_type=select_compute_type(device, requested_compute_type, manifest_default, supported),
        lanes=lanes,
        cpu_threads=threads_per_lane(cpu_threads, cores, lanes, checkpoints),
    )


def apply_cuda_alloc_conf(device: str, conf: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``PYTORCH_CUDA_ALLOC_CONF`` for a GPU worker unless the operator already set it.

    Must run before torch is imported (torch reads it once). Writes the process environment
    (it configures a library, it is not Hark configuration being read).

    Returns:
        True when the variable was set by this call.
    """
    target = os.environ if environ is None else environ
    if device != "cuda" or not conf or CUDA_ALLOC_ENV in target:
        return False
    target[CUDA_ALLOC_ENV] = conf
    return True


# --- GPU memory budget (pure) -----------------------------------------------------------------------


def model_file_bytes(checkpoint_dir: Path) -> int:
    """Size of the checkpoint's ``model.bin`` (0 when absent)."""
    path = Path(checkpoint_dir) / "model.bin"
    return path.stat().st_size if path.is_file() else 0


def estimate_gpu_bytes(model_bytes: int, lanes: int = 1, factor: float = GPU_MEMORY_FACTOR) -> int:
    """Planned GPU memory of one checkpoint: ``model.bin`` × factor, plus a workspace per extra lane."""
    return int(model_bytes * factor) + max(0, lanes - 1) * GPU_LANE_OVERHEAD_BYTES


@dataclass(frozen=True)
class GpuBudget:
    """Outcome of :func:`check_gpu_budget`."""

    needed: int
    budget: int
    free: int
    total: int


def check_gpu_budget(
    needs: dict[str, int], free: int, total: int, fraction: float
) -> GpuBudget:
    """Check that the checkpoints fit in ``fraction`` of the free GPU memory.

    Args:
        needs: Checkpoint label -> planned bytes (see :func:`estimate_gpu_bytes`).
        free: Free bytes on the device now.
        total: Total bytes of the device.
        fraction: ``HARK_GPU_MEMORY_FRACTION``.

    Returns:
        The numbers, for the start-up log.

    Raises:
        DeviceError: They do not fit; the message lists each checkpoint's share and what to change.
    """
    needed = sum(needs.values())
    budget = int(free * fraction)
    if needed > budget:
        parts = ", ".join(f"{label} ≈ {_gib(size)}" for label, size in needs.items())
        raise DeviceError(
            f"the checkpoints need about {_gib(needed)} of GPU memory ({parts}) but only {_gib(budget)} is "
            f"available ({fraction:.0%} of {_gib(free)} free of {_gib(total)}): serve fewer checkpoints per "
            "worker, use a smaller compute type (HARK_COMPUTE_TYPE=int8_float16), fewer lanes "
            "(HARK_ENGINE_WORKERS=1), free the GPU, or raise HARK_GPU_MEMORY_FRACTION"
        )
    return GpuBudget(needed=needed, budget=budget, free=free, total=total)


def _gib(size: int) -> str:
    return f"{size / 1024**3:.2f} GiB"
