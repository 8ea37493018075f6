"""workers.device: device, compute type, lanes, threads and the GPU budget, as pure decisions.

The CUDA branches run on a CPU-only machine by passing device counts and memory numbers in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.device import (
    CUDA_ALLOC_ENV,
    GPU_LANE_OVERHEAD_BYTES,
    DeviceError,
    DevicePlan,
    apply_cuda_alloc_conf,
    check_gpu_budget,
    estimate_gpu_bytes,
    inference_lanes,
    model_file_bytes,
    plan_device,
    select_compute_type,
    select_device,
    threads_per_lane,
)

GIB = 1024**3
CPU_TYPES = {"int8", "int8_float32", "float32"}
CUDA_TYPES = {"float16", "int8_float16", "int8_float32", "int8", "float32", "bfloat16", "int8_bfloat16"}


@pytest.mark.parametrize(
    ("requested", "devices", "expected"),
    [("auto", 0, "cpu"), ("auto", 1, "cuda"), ("auto", 4, "cuda"), ("cpu", 2, "cpu"), ("cuda", 1, "cuda"),
     ("AUTO", 0, "cpu")],
)  # fmt: skip
def test_select_device(requested: str, devices: int, expected: str) -> None:
    assert select_device(requested, devices) == expected


def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(DeviceError, match="HARK_DEVICE=auto"):
        select_device("cuda", 0)
    with pytest.raises(DeviceError, match="auto, cpu or cuda"):
        select_device("tpu", 0)


@pytest.mark.parametrize(
    ("device", "requested", "manifest", "supported", "expected"),
    [
        ("cpu", None, "int8", CPU_TYPES, "int8"),              # manifest default
        ("cpu", "float32", "int8", CPU_TYPES, "float32"),      # HARK_COMPUTE_TYPE wins
        ("cpu", None, "float16", CPU_TYPES, "int8"),           # GPU-only types become int8 on CPU
        ("cpu", "int8_float16", "int8", CPU_TYPES, "int8"),
        ("cpu", "bfloat16", "int8", None, "int8"),             # also when support is unknown
        ("cpu", "int16", "int8", CPU_TYPES, "int8"),           # unsupported: first supported fallback
        ("cpu", "default", "int8", CPU_TYPES, "default"),      # pass-through
        ("cuda", None, "float16", CUDA_TYPES, "float16"),
        ("cuda", None, "int8", CUDA_TYPES, "int8"),
        ("cuda", "bfloat16", "int8", {"float16", "int8_float16", "float32"}, "float16"),  # old GPU
        ("cuda", "INT8_FLOAT16", "int8", CUDA_TYPES, "int8_float16"),
        ("cpu", "float16", "int8", set(), "default"),
    ],
)  # fmt: skip
def test_select_compute_type(device: str, requested: str | None, manifest: str, supported: set[str] | None,
                             expected: str) -> None:  # fmt: skip
    assert select_compute_type(device, requested, manifest, supported) == expected


def test_lanes_and_threads() -> None:
    assert inference_lanes("cpu", 0) == 2
    assert inference_lanes("cuda", 0) == 1
    assert inference_lanes("cuda", 3) == 3
    assert threads_per_lane(0, cores=8, lanes=2) == 4
    assert threads_per_lane(0, cores=8, lanes=2, checkpoints=2) == 2  # the checkpoints share the cores
    assert threads_per_lane(0, cores=2, lanes=2, checkpoints=3) == 1  # never below one
    assert threads_per_lane(6, cores=2, lanes=2) == 6                  # HARK_CPU_THREADS wins


def test_plan_device_cpu_and_cuda() -> None:
    common = {"requested_device": "auto", "requested_compute_type": None, "manifest_default": "float16",
              "engine_workers": 0, "cpu_threads": 0, "cores": 16}  # fmt: skip
    assert plan_device(**common, cuda_devices=0, supported=CPU_TYPES) == DevicePlan("cpu", "int8", 2, 8)
    assert plan_device(**common, cuda_devices=2, supported=CUDA_TYPES) == DevicePlan("cuda", "float16", 1, 16)
    assert plan_device(**common, cuda_devices=0, checkpoints=2) == DevicePlan("cpu", "int8", 2, 4)


def test_cuda_alloc_conf_is_set_only_for_gpu_workers_and_never_overrides() -> None:
    environ: dict[str, str] = {}
    assert not apply_cuda_alloc_conf("cpu", "expandable_segments:True", environ)
    assert environ == {}
    assert apply_cuda_alloc_conf("cuda", "expandable_segments:True", environ)
    assert environ == {CUDA_ALLOC_ENV: "expandable_segments:True"}
    environ[CUDA_ALLOC_ENV] = "max_split_size_mb:128"
    assert not apply_cuda_alloc_conf("cuda", "expandable_segments:True", environ)
    assert environ[CUDA_ALLOC_ENV] == "max_split_size_mb:128"


def test_gpu_estimate_and_budget(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"\0" * 1000)
    assert model_file_bytes(tmp_path) == 1000
    assert model_file_bytes(tmp_path / "missing") == 0
    assert estimate_gpu_bytes(1000, lanes=1, factor=2.0) == 2000
    assert estimate_gpu_bytes(1000, lanes=3, factor=2.0) == 2000 + 2 * GPU_LANE_OVERHEAD_BYTES

    needs = {"whisper-large@3": 5 * GIB, "whisper-base@1": 1 * GIB}
    budget = check_gpu_budget(needs, free=10 * GIB, total=16 * GIB, fraction=0.9)
    assert budget.needed == 6 * GIB and budget.budget == 9 * GIB

    with pytest.raises(DeviceError) as refused:
        check_gpu_budget(needs, free=6 * GIB, total=16 * GIB, fraction=0.9)
    message = str(refused.value)
    assert "whisper-large@3" in message and "HARK_GPU_MEMORY_FRACTION" in message and "5.40 GiB" in message
