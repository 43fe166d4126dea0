"""The web dashboard's routes: Envoy serves the files under ``gateway/ui/`` itself, on the
public listener under ``/ui/``, with no token (the API calls the page makes carry the token
the user enters). Only exact GETs of the files found here when the configuration is rendered
are open; every other method or path goes through the token check as before (checks.lua).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

UI_DIR = Path(__file__).resolve().parent / "ui"
PREFIX = "/ui/"

# Envoy holds each file in memory and refuses a direct response larger than the route
# configuration's limit (4 KiB unless raised): the limit is raised to this, and a bigger
# file is refused when the configuration is rendered instead of when Envoy loads it.
MAX_FILE_BYTES = 4 * 1024 * 1024

# By extension; a file of any other kind in the folder is refused when rendering, so nothing
# is ever served with a type a browser would guess.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE, NOTICE
}

# Every byte the page shows may be written by a hostile trial: scripts only from these files,
# no inline script or style, requests only to this origin, never framed.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    # Revalidated on each load, so a new version of the page is never mixed with an old one.
    "cache-control": "no-cache",
}

# Names that are their own URL path: no percent-encoding, nothing Envoy would normalise.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")

_NO_TOKEN = {"filter_metadata": {"envoy.filters.http.lua": {"auth": "none"}}}
# With reject_unknown_method on, the transcoder would answer 404 before the router.
_NO_TRANSCODER = {
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    }
}
_GET = [{"name": ":method", "string_match": {"exact": "GET"}}]


class DashboardError(ValueError):
    """A file in the dashboard's folder cannot be served as it is."""


@dataclass(frozen=True)
class UiFile:
    path: Path
    url: str
    content_type: str


def files(ui_dir: Path = UI_DIR) -> list[UiFile]:
    """Every file under the folder with the URL and type it is served with. Hidden files and
    editor backups (``.app.js.swp``, ``app.js~``) are left out, never served."""
    found = []
    for path in sorted(p for p in ui_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(ui_dir).as_posix()
        if _ignored(relative):
            continue
        content_type = CONTENT_TYPES.get(path.suffix)
        if not _SAFE_NAME.fullmatch(relative) or content_type is None:
            raise DashboardError(f"{relative!r}: not a name or kind of file the dashboard serves")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DashboardError(f"{relative!r}: larger than {MAX_FILE_BYTES} bytes")
        found.append(UiFile(path, PREFIX + relative, content_type))
    return found


def _ignored(relative: str) -> bool:
    """A hidden file or folder on the way, or an editor's backup: not part of the page."""
    return relative.endswith("~") or any(part.startswith(".") for part in relative.split("/"))


def routes(*, indent: str, ui_dir: Path = UI_DIR) -> str:
    """The dashboard's routes, one YAML flow mapping (JSON) a line, for the route list."""
    served = files(ui_dir)
    index = next((f for f in served if f.url == PREFIX + "index.html"), None)
    if index is None:
        raise DashboardError(f"{ui_dir}: no index.html")
    listed = [_file_route(PREFIX, index), *(_file_route(f.url, f) for f in served)]
    listed.append(
        {
            "name": "ui_redirect",
            "match": {"path": PREFIX.rstrip("/"), "headers": _GET},
            "metadata": _NO_TOKEN,
            "redirect": {"path_redirect": PREFIX},
            "response_headers_to_add": _headers_to_add(SECURITY_HEADERS),
            "typed_per_filter_config": _NO_TRANSCODER,
        }
    )
    # Any other GET under the prefix is a plain 404, not a 401 asking for a token.
    listed.append(
        {
            "name": "ui_not_found",
            "match": {"prefix": PREFIX, "headers": _GET},
            "metadata": _NO_TOKEN,
            "direct_response": {
                "status": 404,
                "body": {"inline_string": "no such file in the dashboard"},
            },
            # The body becomes the gateway's JSON error (render.py), with its own type.
            "response_headers_to_add": _headers_to_add(SECURITY_HEADERS),
            "typed_per_filter_config": _NO_TRANSCODER,
        }
    )
    return "\n".join(f"{indent}- {json.dumps(route)}" for route in listed)


def _file_route(url: str, served: UiFile) -> dict[str, object]:
    headers = {"content-type": served.content_type, **SECURITY_HEADERS}
    return {
        "name": f"ui:{url}",
        "match": {"path": url, "headers": _GET},
        "metadata": _NO_TOKEN,
        "direct_response": {"status": 200, "body": {"filename": str(served.path)}},
        "response_headers_to_add": _headers_to_add(headers),
        "typed_per_filter_config": _NO_TRANSCODER,
    }


def _headers_to_add(headers: dict[str, str]) -> list[dict[str, object]]:
    return [
        {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for key, value in headers.items()
    ]
