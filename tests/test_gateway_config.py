"""The gateway's own behaviour, against real Envoy processes and no backend.

The orchestrator address points at a closed port (the orchestrator is down) or at a socket that
accepts connections and never answers (the orchestrator is stuck), so everything checked here is
decided by Envoy itself: auth (fail closed), JSON error bodies, routing, body limit, timeouts,
the admin API's socket, and keeping the token out of the configuration and the logs. Routes
through a real orchestrator are tested end to end elsewhere; the settings and the rendered file
alone, without Envoy, in `tests/unit/test_gateway_settings.py`.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import gateway
from gateway.config import Address, Settings
from gateway.launch import find_envoy, wait_ready
from gateway.render import (
    HEADERS_TOO_LARGE,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_HEADERS_COUNT,
    MAX_REQUEST_HEADERS_KIB,
    write_config,
)
from prism.stack import free_ports

# Lua pattern and JSON special characters, to show the token is compared as plain bytes.
TOKEN = "gw-test.token_7f3a%9c[1]e5b~-^$"
ONE_MIB = 1024 * 1024


def make_settings(
    data_dir: Path,
    *,
    token: str | None,
    sync_timeout_s: float = 300,
    orchestrator: Address | None = None,
) -> Settings:
    listen, closed = free_ports(2)
    return Settings(
        listen=Address("127.0.0.1", listen),
        # By default nothing listens there: the orchestrator is down.
        orchestrator=orchestrator or Address("127.0.0.1", closed),
        token=token,
        data_dir=data_dir,
        sync_timeout_s=sync_timeout_s,
    )


@dataclass
class Running:
    settings: Settings
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def port(self) -> int:
        return self.settings.listen.port

    def logs(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


GatewayFactory = Callable[..., Running]


@pytest.fixture(scope="module")
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    started: list[Running] = []

    def factory(
        *,
        token: str | None,
        sync_timeout_s: float = 300,
        orchestrator: Address | None = None,
        data_dir: Path | None = None,
    ) -> Running:
        base = tmp_path_factory.mktemp("gateway")
        settings = make_settings(
            data_dir or base / "data",
            token=token,
            sync_timeout_s=sync_timeout_s,
            orchestrator=orchestrator,
        )
        stdout, stderr = base / "stdout.log", base / "stderr.log"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = gateway.start(settings, stdout=out, stderr=err)
        running = Running(settings, process, stdout, stderr)
        started.append(running)
        return running

    yield factory
    for running in started:
        gateway.stop(running.process)


@pytest.fixture(scope="module")
def with_token(start_gateway: GatewayFactory) -> Running:
    return start_gateway(token=TOKEN)


@pytest.fixture(scope="module")
def stuck_orchestrator() -> Iterator[Address]:
    """A listening socket nobody accepts from: connections open, no answer ever comes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield Address("127.0.0.1", int(sock.getsockname()[1]))


@pytest.fixture(scope="module")
def with_stuck_orchestrator(start_gateway: GatewayFactory, stuck_orchestrator: Address) -> Running:
    # The transcoder streams a request upstream as it converts it, so with the orchestrator down a
    # connect failure (503) can beat a late body error. A stuck orchestrator lets those errors
    # show deterministically; the short sync timeout bounds what does go through.
    return start_gateway(token=TOKEN, orchestrator=stuck_orchestrator, sync_timeout_s=1)


@pytest.fixture(scope="module")
def without_token(start_gateway: GatewayFactory) -> Running:
    return start_gateway(token=None)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> object:
        assert self.headers.get_content_type() == "application/json", self.body
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if chunked:
            assert body is not None
            connection.request(
                method, path, body=iter([body]), headers=headers or {}, encode_chunked=True
            )
        else:
            connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_error(reply: Reply, status: int, code: int) -> dict[str, object]:
    """An error Envoy made itself: the JSON shape of a transcoded google.rpc.Status."""
    assert reply.status == status, reply.body
    document = reply.json()
    assert isinstance(document, dict)
    assert document["code"] == code
    assert isinstance(document["message"], str) and document["message"]
    return document


def grpc_call(port: int, method: str, metadata: list[tuple[str, str]]) -> grpc.RpcError:
    """Call a unary method with an empty request message; return the error it must end in."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        rpc = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as failure:
            rpc(b"", metadata=metadata, timeout=10)
    return failure.value


PUBLIC_REQUESTS = [
    ("GET", "/", None),
    ("POST", "/", b'{"task": "hello"}'),
    ("GET", "/sweeps/some-id", None),
    ("GET", "/healthz", None),
    ("GET", "/no/such/route", None),
    ("GET", "/v1/sweeps/some-id/trials?pageSize=5", None),
]


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orchestrator",
    [Address("127.0.0.1", 50051), Address("orchestrator.internal", 50051)],
    ids=["ip", "dns-name"],
)
@pytest.mark.parametrize("token", [TOKEN, None], ids=["token", "no-token"])
def test_rendered_config_validates(
    tmp_path: Path, orchestrator: Address, token: str | None
) -> None:
    settings = Settings(orchestrator=orchestrator, token=token, data_dir=tmp_path)
    path = write_config(settings)
    result = subprocess.run(
        [find_envoy(), "--mode", "validate", "--config-path", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- no token: fail closed -----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), PUBLIC_REQUESTS)
@pytest.mark.parametrize("with_header", [False, True], ids=["bare", "bearer"])
def test_no_token_configured_answers_503_json_everywhere(
    without_token: Running, method: str, path: str, body: bytes | None, with_header: bool
) -> None:
    headers = bearer() if with_header else {}
    reply = call(without_token.port, method, path, body=body, headers=headers)
    assert_error(reply, 503, 14)


def test_no_token_configured_grpc_is_unavailable(without_token: Running) -> None:
    error = grpc_call(without_token.port, "/prism.v1.Orchestrator/GetLanding", [])
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "token" in (error.details() or "")


# --- token configured ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN.upper()}",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer {TOKEN} {TOKEN}",
    ],
)
@pytest.mark.parametrize(("method", "path", "body"), PUBLIC_REQUESTS[:3] + PUBLIC_REQUESTS[4:])
def test_missing_or_wrong_token_is_401_json(
    with_token: Running,
    authorization: str | None,
    method: str,
    path: str,
    body: bytes | None,
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    reply = call(with_token.port, method, path, body=body, headers=headers)
    assert_error(reply, 401, 16)
    assert (reply.headers.get("www-authenticate") or "").startswith("Bearer")


@pytest.mark.parametrize(
    "metadata",
    [[], [("authorization", "Bearer wrong")], [("authorization", f"Basic {TOKEN}")]],
    ids=["missing", "wrong", "basic"],
)
def test_grpc_with_missing_or_wrong_token_is_unauthenticated(
    with_token: Running, metadata: list[tuple[str, str]]
) -> None:
    error = grpc_call(with_token.port, "/prism.v1.Orchestrator/GetLanding", metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "missing or invalid bearer token"


def test_grpc_with_token_reaches_for_the_orchestrator(with_token: Running) -> None:
    # Past auth, the call goes upstream, which is down.
    metadata = [("authorization", f"Bearer {TOKEN}")]
    for method in (
        "/prism.v1.Orchestrator/GetLanding",
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ):
        error = grpc_call(with_token.port, method, metadata)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, method


def test_grpc_unknown_service_is_unimplemented(with_token: Running) -> None:
    metadata = [("authorization", f"Bearer {TOKEN}")]
    error = grpc_call(with_token.port, "/prism.v1.Runner/Anything", metadata)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("headers", [{}, bearer(), bearer("wrong")], ids=["none", "good", "bad"])
def test_healthz_needs_no_token(with_token: Running, headers: dict[str, str]) -> None:
    reply = call(with_token.port, "GET", "/healthz", headers=headers)
    assert reply.status == 200
    assert reply.json() == {"status": "ok"}


def test_bearer_scheme_is_case_insensitive(with_token: Running) -> None:
    reply = call(with_token.port, "GET", "/", headers={"authorization": f"bearer {TOKEN}"})
    assert_error(reply, 503, 14)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/no/such/route"),
        ("POST", "/no/such/route"),
        ("GET", "/sweeps/a/b"),
        ("DELETE", "/"),
        ("POST", "/healthz"),
        ("GET", "/prism.v1.Orchestrator/GetLanding"),
    ],
)
def test_unknown_route_is_404_json(with_token: Running, method: str, path: str) -> None:
    reply = call(with_token.port, method, path, body=b"{}", headers=bearer())
    assert_error(reply, 404, 5)


def test_unknown_query_parameter_is_400_json(with_token: Running) -> None:
    reply = call(with_token.port, "GET", "/sweeps/x?bogus=1", headers=bearer())
    assert_error(reply, 400, 3)


@pytest.mark.parametrize(
    "body",
    [
        b"null",
        b"[]",
        b'"str"',
        b"42",
        b"not json",
        b'{"task": 5}',
        b'{"task": true}',
        b'{"task": {"a": 1}}',
        b'{"task": ["a"]}',
        b'{"task": "a"} trailing',
        b'{"task": "\xff"}',
    ],
)
def test_body_the_transcoder_cannot_map_is_400_json(
    with_stuck_orchestrator: Running, body: bytes
) -> None:
    # Bodies that do map (empty, {}, {"task": null}, unknown fields only) reach the orchestrator,
    # which must answer INVALID_ARGUMENT itself.
    reply = call(with_stuck_orchestrator.port, "POST", "/", body=body, headers=bearer())
    assert_error(reply, 400, 3)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413_json(with_stuck_orchestrator: Running, chunked: bool) -> None:
    assert MAX_REQUEST_BYTES == ONE_MIB
    body = json.dumps({"task": "x" * ONE_MIB}).encode()
    port = with_stuck_orchestrator.port
    reply = call(port, "POST", "/", body=body, headers=bearer(), chunked=chunked)
    assert_error(reply, 413, 8)


def test_body_at_the_limit_goes_through_until_the_sync_timeout(
    with_stuck_orchestrator: Running,
) -> None:
    body = json.dumps({"task": "x" * (ONE_MIB - len('{"task": ""}'))}).encode()
    assert len(body) == ONE_MIB
    reply = call(with_stuck_orchestrator.port, "POST", "/", body=body, headers=bearer())
    assert_error(reply, 504, 4)


def test_stuck_orchestrator_grpc_run_sweep_times_out(with_stuck_orchestrator: Running) -> None:
    metadata = [("authorization", f"Bearer {TOKEN}")]
    error = grpc_call(with_stuck_orchestrator.port, "/prism.v1.Orchestrator/RunSweep", metadata)
    # Envoy's own mapping of its 504 for gRPC clients.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "upstream request timeout"


@pytest.mark.parametrize(("method", "path", "body"), PUBLIC_REQUESTS[:3])
def test_orchestrator_down_is_503_json(
    with_token: Running, method: str, path: str, body: bytes | None
) -> None:
    reply = call(with_token.port, method, path, body=body, headers=bearer())
    assert_error(reply, 503, 14)
    reply = call(with_token.port, method, path, body=body, headers=bearer(), chunked=bool(body))
    assert_error(reply, 503, 14)


# --- request line and headers: size, form and path -----------------------------------------


def send_raw(port: int, request: bytes) -> Reply:
    """Send bytes no HTTP client library would, and parse the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method="GET")
        try:
            response.begin()
            return Reply(response.status, response.headers, response.read())
        finally:
            response.close()


def raw_get(path: bytes, *headers: bytes, token: str = TOKEN) -> bytes:
    lines = [
        b"GET " + path + b" HTTP/1.1",
        b"host: gateway",
        b"authorization: Bearer " + token.encode(),
    ]
    return b"\r\n".join([*lines, *headers, b"connection: close", b"", b""])


@pytest.mark.parametrize("size", [17_000, 60_000, 70_000], ids=["over", "60KB", "over-codec"])
@pytest.mark.parametrize("token", [TOKEN, "wrong"])
def test_headers_over_the_limit_are_431_json(
    with_stuck_orchestrator: Running, size: int, token: str
) -> None:
    # 60 KB is the size that got 429 from the orchestrator; 70 KB is over even Envoy's codec
    # limit, which answers before any filter. The size is checked before the token.
    request = raw_get(b"/sweeps/x", b"x-big: " + b"a" * size, token=token)
    document = assert_error(send_raw(with_stuck_orchestrator.port, request), 431, 8)
    assert document["message"] == HEADERS_TOO_LARGE


def test_a_url_over_the_limit_is_431_json(with_stuck_orchestrator: Running) -> None:
    request = raw_get(b"/sweeps/" + b"x" * 17_000)
    document = assert_error(send_raw(with_stuck_orchestrator.port, request), 431, 8)
    assert document["message"] == HEADERS_TOO_LARGE


def test_headers_under_the_limit_go_through(with_token: Running) -> None:
    request = raw_get(b"/sweeps/x", b"x-big: " + b"a" * (MAX_REQUEST_HEADERS_KIB * 1024 - 1024))
    # Past the checks, to the orchestrator, which is down.
    assert_error(send_raw(with_token.port, request), 503, 14)


def test_too_many_headers_is_431_json(with_token: Running) -> None:
    many = [b"x-h%d: v" % i for i in range(MAX_REQUEST_HEADERS_COUNT + 1)]
    document = assert_error(send_raw(with_token.port, raw_get(b"/", *many)), 431, 8)
    assert document["message"] == f"the request has more than {MAX_REQUEST_HEADERS_COUNT} headers"


def test_grpc_headers_over_the_limit_are_resource_exhausted(with_token: Running) -> None:
    metadata = [("authorization", f"Bearer {TOKEN}"), ("x-big", "a" * 17_000)]
    error = grpc_call(with_token.port, "/prism.v1.Orchestrator/GetLanding", metadata)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == HEADERS_TOO_LARGE


def test_grpc_headers_over_the_codec_limit_end_the_connection_not_the_gateway(
    with_token: Running,
) -> None:
    # Over the codec's own limit HTTP/2 has no way to answer but to reset: the one case a gRPC
    # client is not told why. The gateway carries on.
    metadata = [("authorization", f"Bearer {TOKEN}"), ("x-big", "a" * 70_000)]
    error = grpc_call(with_token.port, "/prism.v1.Orchestrator/GetLanding", metadata)
    assert error.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL}
    assert call(with_token.port, "GET", "/healthz").status == 200


@pytest.mark.parametrize(
    "path",
    [
        b"/sweeps/abc%00def",
        b"/v1/sweeps/abc%00def",
        b"/v1/sweeps/%00/events",
        b"/v1/sweeps/x/trials/%00/logs",
        b"/v1/sweeps/x/trials/0/artifacts/a%00b",
    ],
)
def test_an_encoded_nul_in_the_path_is_400_json_naming_it(with_token: Running, path: bytes) -> None:
    document = assert_error(send_raw(with_token.port, raw_get(path)), 400, 3)
    assert "not allowed" in str(document["message"]) and "NUL" in str(document["message"])


@pytest.mark.parametrize(
    "path",
    [
        b"/sweeps/%ff%fe",
        b"/sweeps/a%c3",  # a sequence cut short
        b"/sweeps/%c0%af",  # an overlong "/"
        b"/sweeps/%ed%a0%80",  # a surrogate
        b"/sweeps/%f4%90%80%80",  # above U+10FFFF
        b"/sweeps/%zz%ff",
        b"/v1/sweeps/%ff/events",
        b"/v1/sweeps/x/trials/0/artifacts/%ff",
        b"/v1/sweeps?pageToken=%ff",
    ],
)
def test_percent_encoded_bytes_that_are_not_utf8_are_400_json(
    with_token: Running, path: bytes
) -> None:
    document = assert_error(send_raw(with_token.port, raw_get(path)), 400, 3)
    assert "not allowed" in str(document["message"]) and "UTF-8" in str(document["message"])


@pytest.mark.parametrize(
    "path",
    [
        b"/sweeps/%e2%82%ac",
        b"/sweeps/%f0%9f%98%80",
        b"/sweeps/%01%7f",
        b"/sweeps/a%zz",
        b"/sweeps/a%",
    ],
)
def test_other_escapes_reach_the_orchestrator(with_token: Running, path: bytes) -> None:
    # Well-formed UTF-8 (control characters included) and escapes that are not %XX are the
    # orchestrator's to judge: here it is down, hence 503.
    assert_error(send_raw(with_token.port, raw_get(path)), 503, 14)


@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        (b"GET /sweeps/x HTTP/1.1\r\nconnection: close\r\n\r\n", 400, "no Host header"),
        (b"GET /sweeps/a\x01b HTTP/1.1\r\nhost: g\r\n\r\n", 400, "http1.invalid_characters"),
        (b"GET /sweeps/a b HTTP/1.1\r\nhost: g\r\n\r\n", 400, "not valid HTTP/1.1"),
        (b"GET /x HTTP/1.1\r\nhost: g\r\nx-a: a\x01b\r\n\r\n", 400, "invalid_characters"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400, "not valid HTTP/1.1"),
        (b"GET /x HTTP/1.0\r\nhost: g\r\n\r\n", 426, "HTTP/1.0"),
        (b"OPTIONS * HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n", 404, "starts with /"),
        (
            b"POST / HTTP/1.1\r\nhost: g\r\ncontent-length: 5\r\ntransfer-encoding: chunked"
            b"\r\n\r\n0\r\n\r\n",
            400,
            "content_length_and_chunked",
        ),
        (
            b"POST / HTTP/1.1\r\nhost: g\r\ntransfer-encoding: gzip\r\n\r\n",
            501,
            "Transfer-Encoding",
        ),
    ],
    ids=[
        "no-host",
        "control-in-path",
        "space-in-path",
        "control-in-header",
        "tls-hello",
        "http-1.0",
        "asterisk",
        "length-and-chunked",
        "gzip-transfer",
    ],
)
def test_malformed_http_gets_json_naming_the_fault(
    with_token: Running, request_bytes: bytes, status: int, says: str
) -> None:
    reply = send_raw(with_token.port, request_bytes)
    assert reply.status == status, reply.body
    document = reply.json()
    assert isinstance(document, dict)
    assert says in str(document["message"])


# --- what Envoy loaded ---------------------------------------------------------------------


def admin_get(settings: Settings, path: str) -> bytes:
    status, body = gateway.admin_request(settings, path)
    assert status == 200, body
    return body


def test_route_timeouts(start_gateway: GatewayFactory) -> None:
    running = start_gateway(token=TOKEN, sync_timeout_s=123.5)
    dump = json.loads(admin_get(running.settings, "/config_dump?resource=static_route_configs"))
    (config,) = dump["configs"]
    (virtual_host,) = config["route_config"]["virtual_hosts"]
    routes = {route["name"]: route for route in virtual_host["routes"]}
    assert routes["run_sweep"]["match"]["path"] == "/prism.v1.Orchestrator/RunSweep"
    assert routes["run_sweep"]["route"]["timeout"] == "123.500s"
    assert routes["orchestrator_unary"]["match"]["prefix"] == "/prism.v1.Orchestrator/"
    assert routes["orchestrator_unary"]["route"]["timeout"] == "30s"
    for streaming in ("reflection", "health_watch"):
        assert routes[streaming]["route"]["timeout"] == "0s"
        assert routes[streaming]["route"]["idle_timeout"] == "300s"
    assert "direct_response" in routes["healthz"]


def test_token_stays_out_of_config_dump_command_line_and_logs(
    start_gateway: GatewayFactory,
) -> None:
    running = start_gateway(token=TOKEN)
    for headers in (bearer(), bearer("wrong"), {}):
        call(running.port, "GET", "/", headers=headers)
        call(running.port, "POST", "/", body=b'{"task": "x"}', headers=headers)
    grpc_call(running.port, "/prism.v1.Orchestrator/GetLanding", [("authorization", "Bearer w")])
    dump = admin_get(running.settings, "/config_dump?include_eds")
    assert b"prism.v1.Orchestrator" in dump
    assert TOKEN.encode() not in dump
    cmdline = Path(f"/proc/{running.process.pid}/cmdline").read_bytes()
    assert TOKEN.encode() not in cmdline
    gateway.stop(running.process)  # flushes the access log
    logs = running.logs()
    access_lines = [json.loads(line) for line in running.stdout.read_text().splitlines()]
    assert len(access_lines) >= 7
    assert all(line["path"] in {"/", "/prism.v1.Orchestrator/GetLanding"} for line in access_lines)
    assert TOKEN not in logs
    assert "authorization" not in logs.lower()


# --- the admin API: a Unix socket for the stack's user alone -------------------------------


def tcp_listening_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on: its socket inodes found in the kernel's tables."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed since the listing
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN; 9: the inode
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_admin_answers_on_its_unix_socket_and_on_no_tcp_port(with_token: Running) -> None:
    settings = with_token.settings
    assert admin_get(settings, "/ready").strip() == b"LIVE"
    dump = json.loads(admin_get(settings, "/config_dump?mask=bootstrap"))
    admin_address = dump["configs"][0]["bootstrap"]["admin"]["address"]
    assert admin_address == {"pipe": {"path": str(settings.admin_socket), "mode": 0o600}}
    # The public listener is the only TCP port Envoy holds.
    assert tcp_listening_ports(with_token.process.pid) == {settings.listen.port}


def test_admin_socket_is_the_stack_users_alone(with_token: Running) -> None:
    sock = with_token.settings.admin_socket
    assert sock == with_token.settings.data_dir / "gateway" / "admin.sock"
    for path, mode in ((sock, 0o600), (sock.parent, 0o700)):
        info = path.lstat()
        assert stat.S_IMODE(info.st_mode) == mode, path
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid()), path
    assert stat.S_ISSOCK(sock.lstat().st_mode)


NOBODY = 65534
# Imports first, then drops root: after the drop the interpreter's own files may be out of reach.
CONNECT_AS_NOBODY = f"""
import errno, os, socket, sys
os.setgroups([])
os.setgid({NOBODY})
os.setuid({NOBODY})
probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    probe.connect(sys.argv[1])
except OSError as error:
    print(errno.errorcode[error.errno])
else:
    print("connected")
"""


def connect_as_nobody(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-I", "-c", CONNECT_AS_NOBODY, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder anyone may pass through (pytest's own is its owner's alone), so that only the
    gateway's own modes can stop another user."""
    folder = Path(tempfile.mkdtemp(prefix="prism-gw-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_another_user_cannot_open_the_admin_socket(
    start_gateway: GatewayFactory, open_folder: Path
) -> None:
    running = start_gateway(token=TOKEN, data_dir=open_folder / "data")
    sock = running.settings.admin_socket
    try:
        assert connect_as_nobody(sock) == "EACCES"
        # Each guard holds alone: the socket's mode with its folder opened...
        sock.parent.chmod(0o711)
        assert connect_as_nobody(sock) == "EACCES"
        # ...and the probe does tell: with the socket opened too, it gets in.
        sock.chmod(0o666)
        assert connect_as_nobody(sock) == "connected"
    finally:
        gateway.stop(running.process)


def test_a_second_gateway_on_the_same_data_folder_is_refused(
    start_gateway: GatewayFactory,
) -> None:
    first = start_gateway(token=TOKEN)
    second = make_settings(first.settings.data_dir, token=TOKEN)
    with pytest.raises(gateway.GatewayError, match="another gateway"):
        gateway.start(second, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert admin_get(first.settings, "/ready").strip() == b"LIVE"


def test_the_socket_of_a_killed_gateway_is_replaced(start_gateway: GatewayFactory) -> None:
    killed = start_gateway(token=TOKEN)
    killed.process.kill()
    killed.process.wait()
    assert killed.settings.admin_socket.exists()  # nothing removed it
    again = make_settings(killed.settings.data_dir, token=TOKEN)
    process = gateway.start(again, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert admin_get(again, "/ready").strip() == b"LIVE"
        assert stat.S_IMODE(again.admin_socket.stat().st_mode) == 0o600
    finally:
        gateway.stop(process)


# --- the launcher ----------------------------------------------------------------------------


def test_python_m_gateway_becomes_envoy(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", token=TOKEN)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PRISM_GATEWAY_ADDR": str(settings.listen),
        "PRISM_ORCHESTRATOR_ADDR": str(settings.orchestrator),
        "PRISM_DATA_DIR": str(settings.data_dir),
        "PRISM_API_TOKEN": "overridden-by-the-file",
        "PRISM_API_TOKEN_FILE": str(tmp_path / "token"),
    }
    (tmp_path / "token").write_text(TOKEN + "\n")
    repo_root = Path(gateway.__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        cwd=repo_root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(settings, process)
        # Same pid, now the Envoy binary itself.
        assert Path(f"/proc/{process.pid}/exe").resolve().name == "envoy"
        assert stat.S_IMODE(settings.config_path.stat().st_mode) == 0o600
        assert call(settings.listen.port, "GET", "/", headers=bearer()).status == 503
        assert (
            call(settings.listen.port, "GET", "/", headers=bearer("overridden-by-the-file")).status
            == 401
        )
    finally:
        gateway.stop(process)


def test_python_m_gateway_refuses_bad_settings(tmp_path: Path) -> None:
    repo_root = Path(gateway.__file__).resolve().parent.parent
    data_dir = tmp_path / ("d" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=repo_root,
        env={"PRISM_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["level"] == "critical"
    assert "PRISM_DATA_DIR" in line["message"] and "admin socket" in line["message"]
    assert not data_dir.exists()
