"""The dashboard's files and the routes that serve them, in-process: the vendored library is
the pinned one, every file is served with a known type and the security headers, and the
files ship in the package. The page itself runs in a browser in ``tests/test_dashboard.py``."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import dashboard
from gateway.config import Settings
from gateway.render import render
from tests.conftest import REPO

VENDOR = dashboard.UI_DIR / "vendor"
# "| file | package | version | sha256 |" rows of the vendor note.
PIN = re.compile(r"^\| (\S+) \| (\S+) \| (\d+\.\d+\.\d+) \| ([0-9a-f]{64}) \|$", re.MULTILINE)


def test_vendored_files_are_the_pinned_versions() -> None:
    pins = PIN.findall((VENDOR / "README.md").read_text())
    assert pins, "the vendor note lists no pinned file"
    for name, _package, _version, sha256 in pins:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == sha256, name
    for folder in {(VENDOR / name).parent for name, *_ in pins}:
        assert (folder / "LICENSE").is_file(), f"{folder} has no LICENSE"


def test_every_file_is_routed_with_its_type_and_the_security_headers(tmp_path: Path) -> None:
    served = {f.url: f for f in dashboard.files()}
    assert {"/ui/index.html", "/ui/app.js", "/ui/style.css"} <= set(served)
    assert served["/ui/app.js"].content_type.startswith("text/javascript")
    routes = _routes(render(Settings(data_dir=tmp_path)))
    by_path = {r["match"].get("path"): r for r in routes if "path" in r["match"]}
    for url in [*served, "/ui/"]:
        route = by_path[url]
        assert route["metadata"]["filter_metadata"]["envoy.filters.http.lua"] == {"auth": "none"}
        assert route["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]
        headers = {
            h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]
        }
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe" not in policy
    assert by_path["/ui/"]["direct_response"]["body"]["filename"].endswith("/ui/index.html")
    assert by_path["/ui"]["redirect"] == {"path_redirect": "/ui/"}
    # The redirect and the 404 carry the same headers as the files.
    for name in ["ui_redirect", "ui_not_found"]:
        (route,) = [r for r in routes if r["name"] == name]
        headers = {
            h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]
        }
        assert dashboard.SECURITY_HEADERS.items() <= headers.items(), name


def test_a_route_open_without_a_token_never_reaches_a_cluster(tmp_path: Path) -> None:
    config = yaml.safe_load(render(Settings(data_dir=tmp_path)))
    open_routes = [
        route
        for route in _every_route(config)
        if route.get("metadata", {}).get("filter_metadata", {}).get("envoy.filters.http.lua")
        == {"auth": "none"}
    ]
    assert {"healthz", "ui_redirect", "ui_not_found", "ui:/ui/app.js"} <= {
        r["name"] for r in open_routes
    }
    for route in open_routes:
        assert "route" not in route, route["name"]
        assert ("direct_response" in route) != ("redirect" in route), route["name"]


def test_no_inline_script_or_handler_in_the_page() -> None:
    page = (dashboard.UI_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.DOTALL)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", page), "an inline event handler"
    code = (dashboard.UI_DIR / "app.js").read_text()
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", code)


def test_an_unknown_kind_of_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "notes.exe").write_bytes(b"MZ")
    with pytest.raises(dashboard.DashboardError, match=r"notes\.exe"):
        dashboard.routes(indent="", ui_dir=tmp_path)


def test_hidden_files_and_editor_backups_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "app.js").write_text("")
    for junk in [".app.js.swp", "app.js~", ".git/config", "vendor/.DS_Store", "#app.js#~"]:
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / junk).write_bytes(b"\0")
    assert [f.url for f in dashboard.files(tmp_path)] == ["/ui/app.js", "/ui/index.html"]
    assert "swp" not in dashboard.routes(indent="", ui_dir=tmp_path)


def test_the_files_ship_as_package_data() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["gateway"]
    for served in dashboard.files():
        relative = served.path.relative_to(REPO / "gateway")
        assert any(relative.match(p) for p in patterns), f"{relative} is not package data"


def _every_route(node: Any) -> Iterator[dict[str, Any]]:
    """Every route of every virtual host, wherever it is in the configuration."""
    if isinstance(node, dict):
        if isinstance(node.get("routes"), list) and "domains" in node:
            yield from node["routes"]
        for value in node.values():
            yield from _every_route(value)
    elif isinstance(node, list):
        for item in node:
            yield from _every_route(item)


def _routes(config: str) -> list[dict[str, Any]]:
    """The dashboard's routes as render.py wrote them: one JSON object a line."""
    lines = [line.strip()[2:] for line in config.splitlines() if '"name": "ui' in line]
    return [json.loads(line) for line in lines]
