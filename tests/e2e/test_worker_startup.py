"""The worker refuses to start, with a message that says what to fix, when MODEL_URL is unusable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import Checkpoints
from tests.processes import Launcher

pytestmark = pytest.mark.e2e


def _refuses(hark: Launcher, deployment: str, model_url: str, *mentions: str) -> str:
    env = hark.env_for(deployment, MODEL_URL=model_url)
    code, output = hark.run_to_exit(["worker"], env, timeout=120)
    assert code != 0, f"the worker started with MODEL_URL={model_url!r}:\n{output}"
    assert "Traceback" not in output, f"a clear message, not a stack trace:\n{output}"
    for mention in mentions:
        assert mention.lower() in output.lower(), f"{mention!r} missing from:\n{output}"
    return output


@pytest.mark.timeout(150)
def test_empty_model_url(hark: Launcher, deployment: str) -> None:
    _refuses(hark, deployment, "", "MODEL_URL")


@pytest.mark.timeout(150)
def test_four_checkpoints(hark: Launcher, deployment: str, bundled_checkpoints: Checkpoints, tmp_path: Path) -> None:
    urls = [bundled_checkpoints.tiny_en, bundled_checkpoints.base, tmp_path / "c", tmp_path / "d"]
    _refuses(hark, deployment, ",".join(map(str, urls)), "MODEL_URL", "3")


@pytest.mark.timeout(150)
def test_duplicate_entries(hark: Launcher, deployment: str, bundled_checkpoints: Checkpoints) -> None:
    tiny = str(bundled_checkpoints.tiny_en)
    _refuses(hark, deployment, f"{tiny},{tiny}", "MODEL_URL", tiny)


@pytest.mark.timeout(150)
def test_same_checkpoint_through_two_spellings(
    hark: Launcher, deployment: str, bundled_checkpoints: Checkpoints
) -> None:
    tiny = str(bundled_checkpoints.tiny_en)
    _refuses(hark, deployment, f"{tiny},file://{tiny}", "MODEL_URL")


@pytest.mark.timeout(150)
def test_nonexistent_path(hark: Launcher, deployment: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    _refuses(hark, deployment, str(missing), str(missing))


@pytest.mark.timeout(150)
def test_corrupted_checkpoint_names_the_file(hark: Launcher, deployment: str, corrupted_tiny_en: Path) -> None:
    output = _refuses(hark, deployment, str(corrupted_tiny_en), "vocabulary.txt")
    assert "sha256" in output.lower() or "checksum" in output.lower(), output


@pytest.mark.timeout(200)
def test_checkpoint_that_verifies_but_cannot_load(hark: Launcher, deployment: str, bundled_checkpoints: Checkpoints,
                                                 tmp_path: Path) -> None:  # fmt: skip
    """Checksums match (the manifest was built over garbage weights), so only loading can fail:
    the supervisor must notice the child's failure and exit non-zero instead of running half a worker."""
    from checkpoints.pack import pack

    model = tmp_path / "broken-model"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(bundled_checkpoints.tiny_en / name, model / name)
    (model / "model.bin").write_bytes(b"not a CTranslate2 model" * 1000)
    broken = pack(model, tmp_path / "whisper-broken", name="whisper-broken", version="0.0.1", languages=["en"],
                  multilingual=False, progress=False)  # fmt: skip
    env = hark.env_for(deployment, MODEL_URL=str(broken))
    code, output = hark.run_to_exit(["worker"], env, timeout=180)
    assert code != 0, output
    assert "whisper-broken" in output, output


@pytest.mark.timeout(150)
def test_bad_deployment_name(hark: Launcher, bundled_checkpoints: Checkpoints) -> None:
    env = hark.env_for("Bad_Name!", MODEL_URL=str(bundled_checkpoints.tiny_en))
    code, output = hark.run_to_exit(["worker"], env, timeout=120)
    assert code != 0 and "HARK_DEPLOYMENT" in output and "Traceback" not in output, output
