"""`hark route`: the table, and the live check against each replica's /ready (tiny real upstreams)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hark.commands import route
from tests.upstreams import Upstream, refused_url, upstreams


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps the table to the terminal's width


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


def test_a_consistent_map_passes_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with upstreams(Upstream("english", ["en"]), Upstream("europe", ["de", "fr", "it"])) as (en, eu):
        path = _write(tmp_path, f"en: {en.url}\nde: {eu.url}\nfr: {eu.url}\n")
        assert route.main(["--routes", str(path), "--key", "k-9"]) == 0
    out = capsys.readouterr().out
    assert "Hark routes" in out and en.url in out and "1/1 up" in out and "(europe)" in out
    assert "it, which no route names" in out  # info: served but unrouted
    assert "OK 3 route(s) to 2 deployment(s)" in out
    assert en.seen[0].path == "/ready" and en.seen[0].headers["Authorization"] == "Bearer k-9"


def test_wrong_language_and_down_replica_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("HARK_ROUTES", str(tmp_path / "routes.yaml"))
    with upstreams(Upstream("english", ["en"]), Upstream("busy", ["de"], status=503)) as (en, busy):
        down = refused_url()
        _write(tmp_path, f"en: {en.url}\nhi: {en.url}\nde: [{busy.url}, {down}]\n'*': {en.url}\n")
        assert route.main([]) == 1
    out = capsys.readouterr().out
    assert f"hi is routed to {en.url} (deployment 'english'), which does not serve it; it serves en" in out
    assert f"{busy.url} is down: /ready answered 503" in out
    assert f"{down} is down: unreachable" in out
    assert "0/2 up" in out and "* (fallback)" in out


def test_bad_or_missing_map_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("HARK_ROUTES", raising=False)
    assert route.main([]) == 2
    assert "HARK_ROUTES" in capsys.readouterr().err
    assert route.main(["--routes", str(_write(tmp_path, "en: http://a:1\nklingon: http://b:1\n"))]) == 2
    assert "'klingon'" in capsys.readouterr().err
