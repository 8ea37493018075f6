"""Authentication is installed once on the app: every endpoint needs a key unless it is public,
including endpoints of blueprints that know nothing about auth; blueprints never import web.app."""

from __future__ import annotations

import ast
from pathlib import Path

from flask import Blueprint, jsonify

from tests.unit.web_helpers import JOBS, AppFactory, assert_error
from web.auth import PUBLIC_ENDPOINTS

WEB = Path(__file__).resolve().parents[2] / "web"


def test_a_blueprint_that_forgets_auth_is_still_protected(make_app: AppFactory) -> None:
    app = make_app(api_keys="k-one")
    extra = Blueprint("extra", __name__)

    @extra.get("/extra")
    def extra_view():  # type: ignore[no-untyped-def]
        return jsonify({"secret": True})

    app.register_blueprint(extra)
    client = app.test_client()
    assert_error(client.get("/extra"), 401)
    assert client.get("/extra", headers={"Authorization": "Bearer k-one"}).get_json() == {"secret": True}


def test_only_probes_openapi_and_the_console_page_are_public(make_app: AppFactory) -> None:
    app = make_app(api_keys="k-one")  # /metrics: public only with HARK_METRICS_AUTH=open (test_web_auth_keys)
    public = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint in PUBLIC_ENDPOINTS}
    assert public == {"/health", "/ready", "/openapi.json", "/static/<path:filename>", "/console",
                      "/console/", "/console/static/<path:filename>"}
    assert_error(app.test_client().get("/metrics"), 401)
    client = app.test_client()
    assert_error(client.get(JOBS + "req_" + "0" * 24), 401)
    assert_error(client.get("/no-such-path"), 401)  # unknown paths are not probed anonymously


def test_auth_off_explicitly_ignores_keys(make_app: AppFactory) -> None:
    client = make_app(api_keys="k-one", auth="off").test_client()
    assert_error(client.get(JOBS + "req_" + "0" * 24), 404)


def test_auth_on_without_keys_refuses_everyone(make_app: AppFactory) -> None:
    client = make_app(api_keys="", auth="on").test_client()
    assert_error(client.get(JOBS + "req_" + "0" * 24), 401)


def test_blueprints_do_not_import_the_app_module() -> None:
    for path in sorted(WEB.glob("*.py")):
        if path.name in ("app.py", "server.py", "gunicorn_conf.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert "web.app" not in imported, f"{path.name} imports web.app"
