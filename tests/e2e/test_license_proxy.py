"""A real `hark license-proxy` process and the API app: served while it answers, and within the grace period
after it is killed."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from hark.license import issue, new_private_key, public_key_text
from tests.processes import Launcher, free_port
from tests.unit.web_helpers import BASE, TINY_EN, AppFactory, announce, post

pytestmark = pytest.mark.e2e


def test_api_serves_through_a_real_proxy_and_keeps_serving_when_it_is_killed(
    hark: Launcher, redis_url: str, redis_client, deployment: str
) -> None:
    signer = new_private_key()
    key = issue(signer, customer="Acme", expires_at=int(time.time()) + 86400, deployments=[deployment])
    port = free_port()
    env = hark.env_for(deployment, LICENSE_KEY=key, HARK_LICENSE_PUBLIC_KEYS=public_key_text(signer.public_key()),
                       HARK_LICENSE_PROXY_HOST="127.0.0.1", HARK_LICENSE_PROXY_PORT=port)  # fmt: skip
    proxy = hark.spawn("license-proxy", ["license-proxy"], env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.1)
    answer = requests.get(f"{url}/v1/license", params={"deployment": deployment}, timeout=5).json()
    assert answer["status"] == "valid" and answer["customer"] == "Acme", proxy.log_text()
    assert "valid until" in proxy.log_text()

    announce(redis_client, deployment, TINY_EN, BASE)
    factory = AppFactory(redis_url, deployment)
    try:
        app = factory(api_base_url=url, sync_wait_seconds=0.05)
        client = app.test_client()
        assert post(client).status_code == 202  # accepted: licensed

        os.killpg(proxy.pid, signal.SIGKILL)  # gunicorn master and worker, no goodbye
        proxy.popen.wait(10)
        gate = app.extensions["hark_license"]
        assert not gate.check_now()  # the proxy is gone...
        answer = post(client)
        assert answer.status_code == 202, answer.get_data(as_text=True)  # ...and the API serves within grace
        gate.stop()
    finally:
        factory.close()
