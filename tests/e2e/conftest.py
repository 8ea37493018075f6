"""Fixtures of the end-to-end tests: the official SDK pointed at the shared deployment."""

from __future__ import annotations

import pytest

from tests.conftest import Deployment
from tests.e2e.helpers import sdk_environment


@pytest.fixture
def sdk_client(shared_deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> object:
    """A sync SmallestAI client on the shared deployment (telemetry off)."""
    monkeypatch.setenv("SMALLESTAI_TELEMETRY", "0")
    from smallestai import SmallestAI

    return SmallestAI(api_key="test-key", environment=sdk_environment(shared_deployment.url))
