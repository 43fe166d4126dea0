"""The rooms of ARCHITECTURE.md and what each may import, checked on the source: a
change that crosses a wall fails here, before anything runs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = {"prism", "orchestrator_svc", "runner_svc", "sandbox", "gateway"}

# Package (or module) -> what it must never import. A module's own rule adds to its
# package's.
FORBIDDEN = {
    # What the services share knows none of them.
    "prism": {"orchestrator_svc", "runner_svc", "sandbox", "gateway", "docker"},
    # The orchestrator never touches Docker or a runner's code: it talks to runners
    # over the runner protocol only.
    "orchestrator_svc": {"runner_svc", "sandbox", "gateway", "docker"},
    "runner_svc": {"orchestrator_svc", "gateway"},
    "sandbox": {"orchestrator_svc", "runner_svc", "gateway", "grpc", "peewee"},
    "gateway": {"orchestrator_svc", "runner_svc", "sandbox", "docker", "peewee"},
    # Pure rules and words: no storage, no network, no other room of the orchestrator.
    "orchestrator_svc.domain": {"peewee", "grpc", "orchestrator_svc.store"},
    "orchestrator_svc.policy": {"peewee", "grpc", "orchestrator_svc.store"},
    "orchestrator_svc.scheduler": {"peewee", "grpc", "orchestrator_svc"},
    "orchestrator_svc.news": {"peewee", "grpc", "orchestrator_svc"},
    "orchestrator_svc.recorder": {"peewee", "grpc", "orchestrator_svc"},
    "orchestrator_svc.strict": {"peewee", "grpc", "orchestrator_svc"},
    # The store reads and writes; it never calls up into what drives it.
    "orchestrator_svc.store": {
        "grpc",
        "orchestrator_svc.dispatch",
        "orchestrator_svc.link",
        "orchestrator_svc.servicer",
        "orchestrator_svc.news",
    },
    "runner_svc.store": {"grpc", "docker", "sandbox", "runner_svc.executor"},
    # A client-only install (no extras) has none of the services' packages.
    "prism.client": {"docker", "peewee", "grpc_health", "grpc_reflection", "packaging"},
    "prism.cli": {"docker", "peewee", "grpc_health", "grpc_reflection", "packaging"},
    # A link reports through RunnerReports; it does not know who listens.
    "orchestrator_svc.link": {"orchestrator_svc.dispatch", "orchestrator_svc.servicer"},
}
# These run inside the sandbox's container, on its Python alone; and the step runner
# (with its package's __init__) runs on the system's python3, before the venv exists.
STDLIB_ONLY = {"sandbox.bootstrap", "sandbox.prism_trial", "prism.steps", "prism"}


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in sorted(OURS):
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).with_suffix("")
            if relative.parts[:2] == ("prism", "v1"):
                continue  # generated
            name = ".".join(relative.parts).removesuffix(".__init__")
            found.append((name, path))
    return found


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def crosses(name: str, wall: str) -> bool:
    return name == wall or name.startswith(f"{wall}.")


@pytest.mark.parametrize("module, path", modules(), ids=[name for name, _ in modules()])
def test_each_module_stays_in_its_room(module: str, path: Path) -> None:
    walls: set[str] = set()
    for room, forbidden in FORBIDDEN.items():
        if crosses(module, room):
            walls |= forbidden
    names = imported(path)
    crossed = sorted(n for n in names for wall in walls if crosses(n, wall))
    assert crossed == [], f"{module} imports {crossed}: see ARCHITECTURE.md"
    if module in STDLIB_ONLY:
        outside = sorted(
            n for n in names if n.split(".")[0] not in sys.stdlib_module_names | {"__future__"}
        )
        assert outside == [], f"{module} runs on the stdlib alone: {outside}"


def test_only_the_protocol_module_builds_runner_messages() -> None:
    builders = []
    for module, path in modules():
        if module == "prism.runner_protocol":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "prism.v1.runner_pb2":
                builders.append(f"{module}:{node.lineno}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "runner_pb2"
            ):
                builders.append(f"{module}:{node.lineno}")
    assert builders == [], f"runner messages built outside prism/runner_protocol.py: {builders}"


def test_the_rules_name_real_rooms() -> None:
    # A rule about a module that no longer exists protects nothing.
    names = {name for name, _ in modules()}
    for room in [*FORBIDDEN, *STDLIB_ONLY]:
        assert any(crosses(name, room) for name in names), room
