"""Structured logging: every line names the component and deployment, and the request and
checkpoint it concerns when there is one (pass them with ``extra={...}``)."""

from __future__ import annotations

import json
import logging
import sys
import time

from hark.settings import ConfigError, Settings, load_settings

_CONTEXT_FIELDS = ("request_id", "checkpoint", "worker_id", "queue", "key_name")


class _ContextFilter(logging.Filter):
    def __init__(self, component: str, deployment: str) -> None:
        super().__init__()
        self.component = component
        self.deployment = deployment

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = getattr(record, "component", self.component)
        record.deployment = getattr(record, "deployment", self.deployment)
        return True


class TextFormatter(logging.Formatter):
    """``time level component[deployment] message key=value...`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in _CONTEXT_FIELDS if getattr(record, name, None)
        )
        line = (
            f"{stamp} {record.levelname:<7} {record.component}[{record.deployment}] "
            f"{record.getMessage()}" + (f"  {context}" if context else "")
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "component": record.component,
            "deployment": record.deployment,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                payload[name] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


def configure(component: str, deployment: str, level: str = "INFO", fmt: str = "text") -> None:
    """Route all logging to stderr with the component and deployment on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter(component, deployment))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "faster_whisper", "botocore", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def start_component(component: str, **overrides: object) -> Settings | None:
    """Read settings and configure logging for an entry point.

    Returns None after printing what to fix when the configuration is invalid; the caller
    exits with its configuration-error status.
    """
    try:
        settings = load_settings(**overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None
    configure(component, settings.deployment, settings.log_level, settings.log_format)
    return settings
