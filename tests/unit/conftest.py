"""Fixtures shared by the API tier's unit tests: an app factory on the real test Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from tests.unit.web_helpers import BASE, TINY_EN, AppFactory, announce


@pytest.fixture
def make_app(redis_url: str, deployment: str) -> Iterator[AppFactory]:
    factory = AppFactory(redis_url, deployment)
    yield factory
    factory.close()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def live(redis_client: redis.Redis, deployment: str) -> None:
    """A live worker serving tiny.en and base."""
    announce(redis_client, deployment, TINY_EN, BASE)
