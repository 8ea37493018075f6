"""Redirect policy for HTTP(S) downloads: never leave https for plain http.

A checkpoint fetched over https must not silently arrive over http, where anyone on the path can read
or replace it (an unpinned archive would be accepted as is). ``requests`` follows redirects itself,
so the rule runs as a response hook: it sees every redirect response, at every hop and on every
request (probe, each range of a parallel download, manifest reads), and raises before the next
request is sent. http -> https (an upgrade) and https -> https are followed as usual.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import requests

from checkpoints.errors import InsecureRedirectError
from checkpoints.urls import redact_url, scheme_of


def check_redirect(origin: str, target: str) -> None:
    """Refuse a redirect from ``origin`` to ``target`` that leaves https.

    Args:
        origin: The URL that answered with a redirect.
        target: Where it points (absolute).

    Raises:
        InsecureRedirectError: ``origin`` is https and ``target`` is not; the message names both
            (credentials and query strings redacted).
    """
    if scheme_of(origin) == "https" and scheme_of(target) != "https":
        shown_origin, shown_target = redact_url(origin), redact_url(target)
        raise InsecureRedirectError(
            f"{shown_origin} redirected to {shown_target}: refusing to follow a redirect from https to "
            f"{scheme_of(target) or 'an unknown scheme'} (the checkpoint would travel unencrypted and could be "
            "read or altered on the way); point MODEL_URL at the final https address, or fix the server so it "
            "does not redirect to http",
            shown_origin,
            shown_target,
        )


def refuse_downgrade(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """``requests`` response hook applying :func:`check_redirect` to every redirect answer.

    Returns:
        ``response`` unchanged when it is not a redirect or the redirect is allowed.

    Raises:
        InsecureRedirectError: The redirect leaves https (the response is closed first).
    """
    if response.is_redirect:
        target = urljoin(response.url, response.headers["location"])
        try:
            check_redirect(response.url, target)
        except InsecureRedirectError:
            response.close()
            raise
    return response


#: Pass as ``hooks=`` to every ``requests`` call that downloads checkpoint data.
HOOKS = {"response": [refuse_downgrade]}
