"""Choose which checkpoint of a deployment answers a request (pure logic, no I/O).

Order: a checkpoint dedicated to the language (not multilingual, lists it), else a
multilingual checkpoint that lists it. ``multi*`` asks for detection on a multilingual
checkpoint. ``model=<checkpoint name>`` pins a checkpoint explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hark.languages import MULTI_GROUPS, is_language_code, is_multi
from hark.schemas import CheckpointInfo, InstanceRecord

#: The public model names of the Pulse API; anything else must be a checkpoint name.
PUBLIC_MODELS = ("pulse", "pulse-pro")


class RoutingError(Exception):
    """The request cannot be routed; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []


@dataclass(frozen=True)
class Route:
    checkpoint: CheckpointInfo
    language: str | None
    """The language forced on the engine; None means detect."""
    detect_among: list[str] | None
    live_instances: int


def served_languages(checkpoints: Sequence[CheckpointInfo]) -> list[str]:
    return sorted({lang for ckpt in checkpoints for lang in ckpt.languages})


def _no_language_error(language: str, checkpoints: Sequence[CheckpointInfo], deployment: str) -> RoutingError:
    served = served_languages(checkpoints)
    return RoutingError(
        400,
        f"language {language!r} is not served by deployment {deployment!r}; "
        f"served languages: {', '.join(served) or 'none'}"
        + ("; use multi for detection" if any(c.multilingual for c in checkpoints) else ""),
        [{"field": "language", "value": language, "served_languages": served,
          "checkpoints": [c.label for c in checkpoints]}],
    )


def _candidates(language: str, checkpoints: Sequence[CheckpointInfo]) -> list[CheckpointInfo]:
    if is_multi(language):
        group = MULTI_GROUPS[language]
        return [
            c for c in checkpoints
            if c.multilingual and (group is None or set(group) & set(c.languages))
        ]
    dedicated = [c for c in checkpoints if not c.multilingual and language in c.languages]
    multilingual = [c for c in checkpoints if c.multilingual and language in c.languages]
    return dedicated + multilingual


def choose(
    *,
    deployment: str,
    model: str,
    language: str,
    catalog: Sequence[CheckpointInfo],
    live: Sequence[InstanceRecord],
) -> Route:
    """Pick the checkpoint for one request or raise :class:`RoutingError`.

    Args:
        deployment: this API tier's deployment, named in error messages.
        model: `pulse`, `pulse-pro` or a checkpoint name to pin.
        language: an ISO 639-1 code or a `multi*` group.
        catalog: checkpoints the deployment serves (live or not).
        live: instances whose heartbeat is current.
    """
    if not (is_multi(language) or is_language_code(language)):
        raise RoutingError(
            400,
            f"language {language!r} is not an ISO 639-1 code or one of {', '.join(MULTI_GROUPS)}",
            [{"field": "language", "value": language}],
        )
    if not catalog:
        raise RoutingError(503, f"no worker of deployment {deployment!r} has registered yet; retry shortly")

    by_name = {c.name: c for c in catalog}
    if model not in PUBLIC_MODELS:
        if model not in by_name:
            raise RoutingError(
                400,
                f"model {model!r} is not served; use pulse, pulse-pro or a checkpoint of deployment "
                f"{deployment!r}: {', '.join(sorted(by_name))}",
                [{"field": "model", "value": model, "allowed": [*PUBLIC_MODELS, *sorted(by_name)]}],
            )
        candidates = [c for c in _candidates(language, catalog) if c.name == model]
        if not candidates:
            raise _no_language_error(language, [by_name[model]], deployment)
    else:
        candidates = _candidates(language, catalog)
        if not candidates:
            raise _no_language_error(language, catalog, deployment)

    live_count = {name: 0 for name in by_name}
    for instance in live:
        if instance.checkpoint.name in live_count:
            live_count[instance.checkpoint.name] += 1
    alive = [c for c in candidates if live_count[c.name] > 0]
    if not alive:
        names = ", ".join(c.label for c in candidates)
        raise RoutingError(503, f"no live worker serves {names} in deployment {deployment!r}; retry shortly")
    chosen = alive[0]

    if is_multi(language):
        group = MULTI_GROUPS[language]
        detect_among = None if group is None else sorted(set(group) & set(chosen.languages))
        return Route(chosen, None, detect_among, live_count[chosen.name])
    return Route(chosen, language, None, live_count[chosen.name])
