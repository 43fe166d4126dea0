"""The gateway's settings and its rendered Envoy configuration, in-process: no Envoy
runs here (``tests/test_gateway_config.py`` runs it, and validates the rendered file
with it)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.config import Address, ConfigError, Settings
from gateway.render import HEADERS_TOO_LARGE, MAX_REQUEST_HEADERS_KIB, render, write_config

# Lua pattern and JSON special characters, to show the token is compared as plain bytes.
TOKEN = "gw-test.token_7f3a%9c[1]e5b~-^$"


def test_rendered_file_is_owner_only_and_holds_no_token(tmp_path: Path) -> None:
    settings = Settings(token=TOKEN, data_dir=tmp_path / "data")
    path = write_config(settings)
    assert path == tmp_path / "data" / "gateway" / "envoy.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert TOKEN not in path.read_text()
    # Rewriting keeps the mode even when something loosened it.
    path.chmod(0o644)
    write_config(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_settings_are_quoted_not_spliced(tmp_path: Path) -> None:
    hostile = Address('evil"\n  injected: true', 50051)
    text = render(Settings(orchestrator=hostile, data_dir=tmp_path))
    assert "\n  injected: true" not in text


def test_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert str(settings.listen) == "127.0.0.1:8080"
    assert str(settings.orchestrator) == "127.0.0.1:50051"
    assert settings.token is None
    assert settings.data_dir == Path(".prism")
    assert settings.sync_timeout_s == 300
    assert TOKEN not in repr(Settings(token=TOKEN))


def test_token_file_wins_over_variable(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    env = {"PRISM_API_TOKEN": "from-variable", "PRISM_API_TOKEN_FILE": str(token_file)}
    assert Settings.from_env(env).token == TOKEN
    assert Settings.from_env({"PRISM_API_TOKEN": f"  {TOKEN} "}).token == TOKEN
    assert Settings.from_env({"PRISM_API_TOKEN": ""}).token is None
    token_file.write_text("\n")
    assert Settings.from_env(env).token is None


@pytest.mark.parametrize(
    "env",
    [
        {"PRISM_API_TOKEN_FILE": "/nonexistent/prism-token"},
        {"PRISM_API_TOKEN": "two words"},
        {"PRISM_API_TOKEN": "caf\u00e9"},
        {"PRISM_GATEWAY_ADDR": "127.0.0.1"},
        {"PRISM_GATEWAY_ADDR": "127.0.0.1:70000"},
        {"PRISM_ORCHESTRATOR_ADDR": ":50051"},
        {"PRISM_GATEWAY_SYNC_TIMEOUT": "soon"},
        {"PRISM_GATEWAY_SYNC_TIMEOUT": "0"},
        {"PRISM_GATEWAY_SYNC_TIMEOUT": "nan"},
    ],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_the_header_limit_is_16_kib() -> None:
    assert MAX_REQUEST_HEADERS_KIB == 16
    assert "16 KiB" in HEADERS_TOO_LARGE


def test_a_data_folder_too_deep_for_the_admin_socket_is_refused(tmp_path: Path) -> None:
    suffix = len("/gateway/admin.sock")
    longest = Path("/" + "d" * (107 - suffix - 1))
    assert len(str(Settings(data_dir=longest).admin_socket)) == 107
    too_long = Path(str(longest) + "d")
    with pytest.raises(ConfigError, match="PRISM_DATA_DIR") as refused:
        Settings(data_dir=too_long)
    assert "108 bytes" in str(refused.value) and "107" in str(refused.value)


def test_the_metrics_listener_passes_on_one_admin_path_alone(tmp_path: Path) -> None:
    import yaml

    assert Settings.from_env({}).metrics is None
    settings = Settings.from_env(
        {"PRISM_GATEWAY_METRICS_ADDR": "127.0.0.1:9102", "PRISM_DATA_DIR": str(tmp_path)}
    )
    assert settings.metrics == Address("127.0.0.1", 9102)
    with pytest.raises(ConfigError, match="PRISM_GATEWAY_METRICS_ADDR"):
        Settings.from_env({"PRISM_GATEWAY_METRICS_ADDR": "9102"})

    resources = yaml.safe_load(render(settings))["static_resources"]
    listeners = {listener["name"]: listener for listener in resources["listeners"]}
    assert set(listeners) == {"public", "metrics"}
    [chain] = listeners["metrics"]["filter_chains"]
    [manager] = chain["filters"]
    config = manager["typed_config"]
    # No Lua (no token), nothing but the router; one virtual host with one route.
    assert [f["name"] for f in config["http_filters"]] == ["envoy.filters.http.router"]
    [host] = config["route_config"]["virtual_hosts"]
    [route] = host["routes"]
    assert route["match"]["headers"] == [
        {"name": ":method", "string_match": {"exact": "GET"}},
        {"name": ":path", "string_match": {"exact": "/stats/prometheus"}},
    ]
    assert route["route"]["cluster"] == "admin_stats"
    # That cluster is the admin socket; no other route anywhere reaches it.
    clusters = {cluster["name"]: cluster for cluster in resources["clusters"]}
    [endpoints] = clusters["admin_stats"]["load_assignment"]["endpoints"]
    assert endpoints["lb_endpoints"][0]["endpoint"]["address"] == {
        "pipe": {"path": str(settings.admin_socket)}
    }
    public_routes = listeners["public"]["filter_chains"][0]["filters"][0]["typed_config"]
    clusters_routed = {
        r.get("route", {}).get("cluster")
        for vh in public_routes["route_config"]["virtual_hosts"]
        for r in vh["routes"]
    }
    assert "admin_stats" not in clusters_routed


def test_without_a_metrics_address_there_is_no_metrics_listener(tmp_path: Path) -> None:
    import yaml

    resources = yaml.safe_load(render(Settings(data_dir=tmp_path)))["static_resources"]
    assert [listener["name"] for listener in resources["listeners"]] == ["public"]
    assert [cluster["name"] for cluster in resources["clusters"]] == ["orchestrator"]
