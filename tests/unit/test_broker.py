"""hark.broker: the per-deployment Celery broker settings that the workers and the API share."""

from __future__ import annotations

from celery import Celery

from hark.broker import broker_key_prefix, celery_settings, queue_key, transport_options
from hark.settings import load_settings


def test_every_broker_key_of_a_deployment_carries_its_prefix() -> None:
    a = transport_options(load_settings(deployment="english", job_timeout_seconds=10, visibility_timeout_seconds=11))
    b = transport_options(load_settings(deployment="multi"))
    assert a["global_keyprefix"] == "hark:english:broker:" == broker_key_prefix("english")
    assert b["global_keyprefix"] == "hark:multi:broker:"
    assert (a["visibility_timeout"], a["unacked_restore_interval"]) == (11, 2)
    assert b["visibility_timeout"] > 3600 and b["unacked_restore_interval"] == 10
    assert queue_key("multi", "hark.multi.whisper-base") == "hark:multi:broker:hark.multi.whisper-base"


def test_the_api_sender_and_the_workers_use_the_same_keys() -> None:
    settings = load_settings(deployment="english", redis_url="redis://127.0.0.1:6379/3")
    sender = Celery("sender")
    sender.config_from_object("celeryconfig")
    sender.conf.update(celery_settings(settings))
    options = sender.conf.broker_transport_options
    assert options["global_keyprefix"] == "hark:english:broker:"
    assert sender.conf.broker_url == "redis://127.0.0.1:6379/3"
    assert sender.conf.task_default_queue == "hark.english.default"
    assert sender.conf.result_backend_transport_options["global_keyprefix"] == "hark:english:broker:"


def test_reserved_queue_suffixes() -> None:
    from hark.queues import RESERVED_QUEUE_SUFFIXES, default_queue, reserved_name_problem, webhook_queue

    assert {webhook_queue("d").rsplit(".", 1)[1], default_queue("d").rsplit(".", 1)[1]} <= RESERVED_QUEUE_SUFFIXES
    for name in ("webhooks", "default", "Webhooks"):
        problem = reserved_name_problem(name)
        assert problem and "reserved" in problem and "rename" in problem
    assert reserved_name_problem("whisper-tiny-en") is None
