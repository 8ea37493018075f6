"""workers.supervisor planning and bookkeeping (pure parts; the e2e tests run `hark worker` for real)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hark.settings import load_settings
from tests.conftest import Checkpoints
from workers.device import DevicePlan
from workers.supervisor import (
    MAX_RESTARTS_PER_MINUTE,
    PlannedCheckpoint,
    StartupError,
    child_argv,
    describe,
    plan_checkpoints,
    restart_delay,
    webhook_argv,
)


def _planned(name: str = "whisper-tiny-en", languages: list[str] | None = None, multilingual: bool = False,
             slots: int = 64) -> PlannedCheckpoint:  # fmt: skip
    return PlannedCheckpoint(name=name, label=f"{name}@1.0.0", path=Path(f"/models/{name}"),
                             languages=languages or ["en"], multilingual=multilingual, slots=slots,
                             plan=DevicePlan("cpu", "int8", 2, 1))  # fmt: skip


def test_plan_of_the_bundled_checkpoints(bundled_checkpoints: Checkpoints, tmp_path: Path) -> None:
    settings = load_settings(model_url=f"{bundled_checkpoints.tiny_en},{bundled_checkpoints.base}",
                             model_cache_dir=tmp_path, device="auto", engine_workers=0, cpu_threads=0)  # fmt: skip
    planned = plan_checkpoints(settings)
    assert [p.name for p in planned] == ["whisper-tiny-en", "whisper-base"]
    assert [p.slots for p in planned] == [64, 64]
    assert planned[0].plan.device == "cpu" and planned[0].plan.compute_type == "int8"
    assert planned[0].plan.lanes == 2
    assert planned[1].multilingual and "de" in planned[1].languages


@pytest.mark.parametrize(
    ("model_url", "mention"),
    [("", "MODEL_URL is empty"), ("/nope/a,/nope/b,/nope/c,/nope/d", "at most 3"), ("/no/such/dir", "/no/such/dir")],
)
def test_unusable_model_url(tmp_path: Path, model_url: str, mention: str) -> None:
    with pytest.raises(StartupError, match=mention):
        plan_checkpoints(load_settings(model_url=model_url, model_cache_dir=tmp_path))


def test_cuda_asked_without_a_gpu(bundled_checkpoints: Checkpoints, tmp_path: Path) -> None:
    settings = load_settings(model_url=str(bundled_checkpoints.tiny_en), model_cache_dir=tmp_path, device="cuda")
    with pytest.raises(StartupError, match="HARK_DEVICE=cuda"):
        plan_checkpoints(settings)


def test_describe_lists_every_checkpoint() -> None:
    text = describe([_planned(), _planned("whisper-base", ["en", "de", "fr"] * 5, True)], "indic", "host-7")
    assert "worker host-7 of deployment indic serves 2 checkpoint(s)" in text
    assert "whisper-tiny-en@1.0.0" in text and "multilingual: en,de,fr" in text and "(15)" in text
    assert "2 x 1" in text and "64" in text


def test_child_command_lines() -> None:
    argv = child_argv(_planned(slots=48), "host-7")
    assert argv[:3] == [sys.executable, "-m", "workers.child"] and argv[3] == "model"
    assert argv[argv.index("--slots") + 1] == "48" and argv[argv.index("--worker-id") + 1] == "host-7"
    assert argv[argv.index("--checkpoint") + 1] == "/models/whisper-tiny-en"
    assert webhook_argv("host-7")[3:] == ["webhooks", "--worker-id", "host-7"]


def test_restart_backoff() -> None:
    assert [restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert MAX_RESTARTS_PER_MINUTE >= 3


def test_children_get_few_malloc_arenas_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.supervisor import child_environment

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("HARK_DEPLOYMENT", "english")
    environment = child_environment()
    assert environment["MALLOC_ARENA_MAX"] == "2" and environment["HARK_DEPLOYMENT"] == "english"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert child_environment()["MALLOC_ARENA_MAX"] == "8"
