"""A checkpoint may not be named like one of the deployment's own queues: its jobs would land on
``hark.<deployment>.webhooks`` (taken and acknowledged by the webhook child) or on Celery's default
queue. The worker refuses to start (exit 2) and says what to rename."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Checkpoints
from tests.processes import Launcher

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(150)
@pytest.mark.parametrize("reserved", ["webhooks", "default"])
def test_a_checkpoint_with_a_reserved_name_is_refused(hark: Launcher, deployment: str,
                                                      bundled_checkpoints: Checkpoints, tmp_path: Path,
                                                      reserved: str) -> None:  # fmt: skip
    from checkpoints.pack import pack

    packed = pack(bundled_checkpoints.tiny_en, tmp_path / reserved, name=reserved, version="1.0.0",
                  languages=["en"], multilingual=False, compute_type="int8", progress=False)  # fmt: skip
    env = hark.env_for(deployment, MODEL_URL=str(packed))
    code, output = hark.run_to_exit(["worker"], env, timeout=120)
    assert code == 2, f"the worker must refuse the checkpoint {reserved!r} (exit 2), got {code}:\n{output}"
    assert "Traceback" not in output, output
    for mention in ("reserved", repr(reserved), "rename"):
        assert mention in output, f"{mention!r} missing from:\n{output}"
