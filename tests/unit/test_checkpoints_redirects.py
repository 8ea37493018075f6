"""The redirect rule: https may never lead to http; everything else is followed."""

from __future__ import annotations

import io

import pytest
import requests

from checkpoints.errors import FetchError, InsecureRedirectError
from checkpoints.redirects import check_redirect, refuse_downgrade


@pytest.mark.parametrize(
    ("origin", "target"),
    [
        ("http://a/m.tar", "http://b/m.tar"),
        ("http://a/m.tar", "https://b/m.tar"),
        ("https://a/m.tar", "https://b/m.tar"),
        ("HTTPS://a/m.tar", "HttpS://b/m.tar"),
    ],
)
def test_allowed_redirects(origin: str, target: str) -> None:
    check_redirect(origin, target)


def test_a_downgrade_is_refused_naming_both_urls_redacted() -> None:
    with pytest.raises(InsecureRedirectError) as caught:
        check_redirect("https://user:pw@models.example.com/m.tar?X-Amz-Signature=s3cr3t",
                       "http://mirror.example.com/m.tar?token=abc")  # fmt: skip
    error = caught.value
    assert isinstance(error, FetchError)  # permanent: never retried
    assert "https://***@models.example.com/m.tar?*** redirected to http://mirror.example.com/m.tar?***" in str(error)
    assert "from https to http" in str(error)
    assert "pw" not in str(error) and "s3cr3t" not in str(error) and "abc" not in str(error)
    assert (error.origin, error.target) == ("https://***@models.example.com/m.tar?***",
                                            "http://mirror.example.com/m.tar?***")  # fmt: skip


def _redirect(url: str, location: str, status: int = 302) -> requests.Response:
    response = requests.Response()
    response.status_code, response.url = status, url
    response.headers["Location"] = location
    response.raw = io.BytesIO()
    return response


@pytest.mark.parametrize("location", ["http://b/m.tar", "//b/m.tar", "ftp://b/m.tar"])
def test_the_hook_resolves_locations_before_judging(location: str) -> None:
    origin = "https://a/x/m.tar"
    if location.startswith("//"):  # scheme-relative: stays https
        assert refuse_downgrade(_redirect(origin, location)).status_code == 302
        return
    with pytest.raises(InsecureRedirectError):
        refuse_downgrade(_redirect(origin, location))


def test_the_hook_ignores_answers_that_are_not_redirects() -> None:
    response = _redirect("https://a/m.tar", "http://b/m.tar", status=200)
    assert refuse_downgrade(response) is response
    assert refuse_downgrade(_redirect("https://a/x/m.tar", "../y/m.tar", status=301)).status_code == 301
