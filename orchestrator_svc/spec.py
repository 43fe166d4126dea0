"""Sweep specs: every field checked against its rule and the server's caps,
then planned into trials.

Rules and caps (the README's reference lists the same):
- task: required; control characters stripped; 1 to 500 characters.
- script: at most MAX_SCRIPT_BYTES, must compile; absent: example runners.
- examples: configured names, each once, only without a script.
- parameters: grid (object of name -> non-empty list), random (trials, seed,
  name -> {"uniform"|"loguniform"|"int": [low, high]} or {"choice": [...]})
  or list (parameter objects); at most MAX_TRIALS trials, MAX_PARAMETERS names
  (letters, digits, "_", ".", "-"; 1 to 64 characters), MAX_PARAMS_BYTES of
  JSON per trial.
- objective: metric name as above; goal "minimize" (default) or "maximize".
- maxParallel 0..MAX_PARALLEL; retries 0..MAX_RETRIES; limits within
  prism.limits.LIMITS, each one given checked (0 included), each one left out
  recorded at its default, so the stored spec, and every answer, shows what runs.
- requirements: see prism.requirements.

Numbers from JSON arrive as doubles; integral ones are turned back into ints,
so {"layers": [1, 2]} gives the script 1 and 2, not 1.0 and 2.0. NaN and the infinities,
which only a gRPC client can send, are refused where they are.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2

from orchestrator_svc.config import Settings
from orchestrator_svc.domain import PlannedTrial
from prism.errors import InvalidArgument
from prism.limits import LIMITS, effective
from prism.requirements import parse_requirements
from prism.trial import MAX_SCRIPT_BYTES
from prism.v1 import orchestrator_pb2

MAX_TASK_CHARS = 500
MAX_TRIALS = 1000
MAX_PARAMETERS = 32
MAX_VALUES = 1000
MAX_PARAMS_BYTES = 16 * 1024
MAX_PARALLEL = 64
MAX_RETRIES = 5
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
GOALS = ("minimize", "maximize")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


@dataclass
class Plan:
    """A validated spec: what to record and what to run."""

    task: str
    spec: dict[str, Any]
    trials: list[PlannedTrial]


class Problems:
    """Collects every violation so one answer names them all."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def add(self, where: str, rule: str) -> None:
        self.found.append((where, rule))

    def raise_any(self) -> None:
        if self.found:
            raise InvalidArgument(*self.found[0], *self.found[1:])


def clean_task(value: str, where: str, problems: Problems) -> str:
    task = "".join(ch for ch in value if unicodedata.category(ch) != "Cc")
    if not task.strip():
        problems.add(where, "is required and must not be empty")
    elif len(task) > MAX_TASK_CHARS:
        problems.add(where, f"must be at most {MAX_TASK_CHARS} characters, got {len(task)}")
    return task


def plain(value: Any) -> Any:
    """JSON from a Struct, with integral doubles made ints again."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _names(keys: list[str], where: str, problems: Problems) -> None:
    if len(keys) > MAX_PARAMETERS:
        problems.add(where, f"at most {MAX_PARAMETERS} parameters, got {len(keys)}")
    for key in keys:
        if not NAME.fullmatch(key):
            problems.add(
                f"{where}.{key[:64]}",
                "parameter names are 1 to 64 letters, digits, '_', '.' or '-', not starting "
                "with a digit",
            )


def _grid(grid: dict[str, Any], problems: Problems) -> list[dict[str, Any]]:
    where = "parameters.grid"
    if not grid:
        problems.add(where, "must name at least one parameter")
        return []
    _names(list(grid), where, problems)
    axes = []
    for name in sorted(grid):
        values = grid[name]
        if not isinstance(values, list) or not values:
            problems.add(f"{where}.{name[:64]}", "must be a non-empty list of values")
            return []
        if len(values) > MAX_VALUES:
            problems.add(f"{where}.{name[:64]}", f"at most {MAX_VALUES} values")
            return []
        axes.append([(name, v) for v in values])
    if math.prod(len(a) for a in axes) > MAX_TRIALS:
        problems.add(where, f"makes more than {MAX_TRIALS} trials")
        return []
    return [dict(combination) for combination in itertools.product(*axes)]


def _number_pair(value: Any) -> tuple[float, float] | None:
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
    ):
        return float(value[0]), float(value[1])
    return None


def _random(search: orchestrator_pb2.RandomSearch, problems: Problems) -> list[dict[str, Any]]:
    where = "parameters.random"
    if not 1 <= search.trials <= MAX_TRIALS:
        problems.add(f"{where}.trials", f"must be 1 to {MAX_TRIALS}, got {search.trials}")
    space = plain(json_format.MessageToDict(search.parameters))
    if not space:
        problems.add(f"{where}.parameters", "must name at least one parameter")
    _names(list(space), f"{where}.parameters", problems)
    samplers: dict[str, tuple[str, Any]] = {}
    for name in sorted(space):
        here = f"{where}.parameters.{name[:64]}"
        spec = space[name]
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            problems.add(
                here, "must be one of " + ", ".join(f'{{"{d}": [...]}}' for d in DISTRIBUTIONS)
            )
            continue
        kind, args = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(args, list) or not 1 <= len(args) <= MAX_VALUES:
                problems.add(here, f"choice needs a list of 1 to {MAX_VALUES} values")
                continue
            samplers[name] = (kind, args)
            continue
        pair = _number_pair(args)
        if pair is None or pair[0] > pair[1] or (kind != "int" and pair[0] == pair[1]):
            problems.add(here, f"{kind} needs [low, high] with low < high")
        elif kind == "loguniform" and pair[0] <= 0:
            problems.add(here, "loguniform needs 0 < low < high")
        elif kind == "int" and not all(float(v).is_integer() for v in pair):
            problems.add(here, "int needs whole numbers [low, high]")
        else:
            samplers[name] = (kind, pair)
    if problems.found:
        return []
    rng = random.Random(search.seed)
    trials = []
    for _ in range(search.trials):
        params: dict[str, Any] = {}
        for name, (kind, args) in samplers.items():
            if kind == "choice":
                params[name] = rng.choice(args)
            elif kind == "int":
                params[name] = rng.randint(int(args[0]), int(args[1]))
            elif kind == "uniform":
                params[name] = rng.uniform(*args)
            else:
                params[name] = math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
        trials.append(params)
    return trials


def _list(sets: list[Any], problems: Problems) -> list[dict[str, Any]]:
    where = "parameters.list"
    if not 1 <= len(sets) <= MAX_TRIALS:
        problems.add(where, f"must hold 1 to {MAX_TRIALS} parameter objects, got {len(sets)}")
        return []
    for i, params in enumerate(sets):
        if not isinstance(params, dict):
            problems.add(f"{where}[{i}]", "must be an object of parameter names to values")
            return []
        _names(list(params), f"{where}[{i}]", problems)
    return sets


def _not_finite(values: struct_pb2.Struct | struct_pb2.ListValue, where: str) -> Iterator[str]:
    """Where ``values`` holds NaN or an infinity: no JSON, but a gRPC client can send them."""
    if isinstance(values, struct_pb2.Struct):
        items = ((f"{where}.{key[:64]}", value) for key, value in values.fields.items())
    else:
        items = ((f"{where}[{i}]", value) for i, value in enumerate(values.values))
    for path, value in items:
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            yield path
        elif kind in ("struct_value", "list_value"):
            yield from _not_finite(getattr(value, kind), path)


def _parameter_sets(spec: orchestrator_pb2.SweepSpec, problems: Problems) -> list[dict[str, Any]]:
    space = spec.parameters
    kind = space.WhichOneof("space")
    if kind is not None:
        values = space.random.parameters if kind == "random" else getattr(space, kind)
        where = "parameters.random.parameters" if kind == "random" else f"parameters.{kind}"
        not_finite = list(itertools.islice(_not_finite(values, where), MAX_PARAMETERS))
        for path in not_finite:
            problems.add(path, "must be a finite number, not NaN or infinity")
        if not_finite:
            return []
    if kind == "grid":
        sets = _grid(plain(json_format.MessageToDict(space.grid)), problems)
    elif kind == "random":
        sets = _random(space.random, problems)
    elif kind == "list":
        sets = _list(plain(json_format.MessageToDict(space.list)), problems)
    else:
        sets = [{}]
    for i, params in enumerate(sets):
        if len(json.dumps(params)) > MAX_PARAMS_BYTES:
            problems.add("parameters", f"trial {i}'s parameters exceed {MAX_PARAMS_BYTES} bytes")
            break
    return sets


def _limits(limits: orchestrator_pb2.Limits, problems: Problems) -> None:
    for name, limit in LIMITS.items():
        if not limits.HasField(name):
            continue  # its default
        value = getattr(limits, name)
        if not (math.isfinite(value) and limit.low <= value <= limit.high):
            problems.add(
                f"limits.{limit.json_name}",
                f"must be {limit.low:g} to {limit.high:g} (left out: {limit.default:g}), "
                f"got {value:g}",
            )


def _script(script: str, problems: Problems) -> None:
    if len(script.encode()) > MAX_SCRIPT_BYTES:
        problems.add("script", f"must be at most {MAX_SCRIPT_BYTES} bytes")
        return
    try:
        compile(script, "trial.py", "exec", dont_inherit=True)
    except SyntaxError as error:
        problems.add("script", f"does not compile: {error.msg} (line {error.lineno})")
    except (ValueError, RecursionError, MemoryError) as error:
        problems.add("script", f"does not compile: {type(error).__name__}")


def plan(spec: orchestrator_pb2.SweepSpec, settings: Settings) -> Plan:
    """Check every field; raise InvalidArgument naming all that are wrong."""
    problems = Problems()
    task = clean_task(spec.task, "task", problems)
    examples = dict(settings.examples)
    if spec.script:
        _script(spec.script, problems)
        if spec.examples:
            problems.add("examples", "only without a script")
    else:
        if spec.HasField("parameters"):
            problems.add("parameters", "need a script (example runners take none)")
        unknown = [n for n in spec.examples if n not in examples]
        if unknown:
            problems.add(
                "examples",
                f"unknown example runners: {', '.join(unknown[:5])}; "
                f"configured: {', '.join(examples)}",
            )
        if len(set(spec.examples)) != len(spec.examples):
            problems.add("examples", "name each example runner once")
    sets = _parameter_sets(spec, problems) if spec.script else []
    if spec.objective.metric and not NAME.fullmatch(spec.objective.metric):
        problems.add("objective.metric", "must be 1 to 64 letters, digits, '_', '.' or '-'")
    if spec.objective.HasField("goal") and spec.objective.goal not in GOALS:
        problems.add("objective.goal", 'must be "minimize" or "maximize" (left out: minimize)')
    if spec.objective.HasField("goal") and not spec.objective.metric:
        problems.add("objective.metric", "is required with a goal")
    if not 0 <= spec.max_parallel <= MAX_PARALLEL:
        problems.add("maxParallel", f"must be 0 (no cap) to {MAX_PARALLEL}")
    if not 0 <= spec.retries <= MAX_RETRIES:
        problems.add("retries", f"must be 0 to {MAX_RETRIES}")
    _limits(spec.limits, problems)
    try:
        requirements = parse_requirements(list(spec.requirements))
    except ValueError as error:
        problems.add("requirements", str(error))
        requirements = []
    problems.raise_any()

    # Stored as the API shows it (JSON names), normalised, every default filled in: what
    # runs is what GetSweep says.
    normalised = json_format.MessageToDict(spec)
    normalised["task"] = task
    if requirements:
        normalised["requirements"] = requirements
    if spec.objective.metric:
        normalised["objective"] = {
            "metric": spec.objective.metric,
            "goal": spec.objective.goal or "minimize",
        }
    if spec.script:
        trials = [
            PlannedTrial(name=f"trial-{i}", script=spec.script, params=params)
            for i, params in enumerate(sets)
        ]
    else:
        names = list(spec.examples) or list(examples)
        trials = [PlannedTrial(name=n, script=examples[n], params={"task": task}) for n in names]
        normalised.setdefault("limits", {}).setdefault("wallSeconds", settings.example_wall_seconds)
    normalised["limits"] = effective(normalised.get("limits"))
    return Plan(task=task, spec=normalised, trials=trials)


def trial_limits(spec: dict[str, Any]) -> dict[str, Any]:
    """The sandbox's limits (bytes, seconds) from a stored spec's `limits`, every one
    set: the spec's own, else the default."""
    limits = effective(spec.get("limits"))
    mib, kib = 2**20, 2**10
    return {
        "wall_seconds": float(limits["wallSeconds"]),
        "memory_bytes": int(limits["memoryMb"]) * mib,
        "cpus": float(limits["cpus"]),
        "processes": int(limits["processes"]),
        "output_bytes": int(limits["outputKb"]) * kib,
        "workspace_bytes": int(limits["workspaceMb"]) * mib,
    }
