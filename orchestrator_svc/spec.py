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
- search (adaptive: the random space or a grid is what the sampler searches, trials its
  budget), earlyStopping (with search; a rule of RULE_SETTINGS), objectives (2 to
  MAX_OBJECTIVES instead of objective), maxDurationSeconds, target (the objective's):
  every default filled in as stored.

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
# Trials per sweep: planned (grid, random, list) or asked for (search.trials). Reads of a
# sweep stay flat in its size: GetSweep carries the first 1,000, ListTrials pages the rest.
MAX_TRIALS = 10_000
MAX_PARAMETERS = 32
MAX_VALUES = 1000
MAX_PARAMS_BYTES = 16 * 1024
MAX_PARALLEL = 64
MAX_RETRIES = 5
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
GOALS = ("minimize", "maximize")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
SAMPLERS = ("tpe", "cmaes", "nsga2", "qmc", "random", "grid")
# The samplers that learn several objectives at once.
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "nsga2", "qmc", "random", "grid")
MAX_OBJECTIVES = 8
# The combinations a grid sampler's grid may have (it lists them all): one trial each.
MAX_GRID = MAX_TRIALS
RULES = ("median", "percentile", "asha", "hyperband")
MAX_STEP = 10**9
# The points a step may make of a range, at most.
MAX_STEPS_IN_RANGE = 1e12
MAX_DURATION_SECONDS = 7 * 24 * 3600.0
# Each early-stopping rule's settings, by JSON name: (low, high, left out). A setting
# not listed for a rule is refused with it.
RULE_SETTINGS: dict[str, dict[str, tuple[float, float, float]]] = {
    "median": {
        "startupTrials": (0, 1000, 5),
        "warmupSteps": (0, MAX_STEP, 0),
        "intervalSteps": (1, MAX_STEP, 1),
    },
    "percentile": {
        "startupTrials": (0, 1000, 5),
        "warmupSteps": (0, MAX_STEP, 0),
        "intervalSteps": (1, MAX_STEP, 1),
        "percentile": (0, 100, 25),
    },
    "asha": {"minResource": (1, MAX_STEP, 1), "reductionFactor": (2, 100, 3)},
    "hyperband": {
        "minResource": (1, MAX_STEP, 1),
        "maxResource": (1, MAX_STEP, 100),
        "reductionFactor": (2, 100, 3),
    },
}


@dataclass
class Plan:
    """A validated spec: what to record and what to run."""

    task: str
    spec: dict[str, Any]
    # The trials planned now; none for an adaptive search, which asks for them as it
    # goes (orchestrator_svc.search).
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


@dataclass(frozen=True)
class Dist:
    """One parameter's distribution: a range of numbers (kind "uniform", "loguniform" or
    "int", with an optional step, and for "int" a log scale) or a list of choices."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


def distributions(space: dict[str, Any], where: str, problems: Problems) -> dict[str, Dist]:
    """The distributions of a random space: name -> {"uniform"|"loguniform"|"int": [low,
    high]} (with "step": s, and for "int" "log": true) or {"choice": [values]}."""
    if not space:
        problems.add(where, "must name at least one parameter")
    _names(list(space), where, problems)
    found: dict[str, Dist] = {}
    for name in sorted(space):
        here = f"{where}.{name[:64]}"
        spec = space[name]
        kinds = [k for k in spec if k in DISTRIBUTIONS] if isinstance(spec, dict) else []
        extra = set(spec) - {*kinds, "step", "log"} if isinstance(spec, dict) else set()
        if len(kinds) != 1 or extra:
            problems.add(
                here, "must be one of " + ", ".join(f'{{"{d}": [...]}}' for d in DISTRIBUTIONS)
            )
            continue
        kind, args = kinds[0], spec[kinds[0]]
        step, log = spec.get("step"), spec.get("log", False)
        if kind == "choice":
            if not isinstance(args, list) or not 1 <= len(args) <= MAX_VALUES:
                problems.add(here, f"choice needs a list of 1 to {MAX_VALUES} values")
            elif "step" in spec or "log" in spec:
                problems.add(here, "choice takes no step or log")
            else:
                found[name] = Dist(kind, choices=tuple(args))
            continue
        pair = _number_pair(args)
        if pair is None or pair[0] > pair[1] or (kind != "int" and pair[0] == pair[1]):
            problems.add(here, f"{kind} needs [low, high] with low < high")
        elif (kind == "loguniform" or log is True) and pair[0] <= 0:
            problems.add(here, f"{kind} on a log scale needs 0 < low")
        elif kind == "int" and not all(float(v).is_integer() for v in pair):
            problems.add(here, "int needs whole numbers [low, high]")
        elif not isinstance(log, bool) or (log and kind != "int"):
            problems.add(f"{here}.log", "is true or false, and only for int")
        elif step is not None and not (
            isinstance(step, (int, float)) and math.isfinite(step) and step > 0
        ):
            problems.add(f"{here}.step", "must be a number above 0")
        elif step is not None and (kind == "loguniform" or log):
            problems.add(f"{here}.step", "cannot go with a log scale")
        elif step is not None and kind == "int" and not float(step).is_integer():
            problems.add(f"{here}.step", "must be a whole number for int")
        elif kind == "int" and max(abs(pair[0]), abs(pair[1])) > 2**53:
            problems.add(here, "int needs whole numbers within ±2^53")
        elif not math.isfinite(pair[1] - pair[0]):
            problems.add(here, "needs a range high - low that is a finite number")
        elif step is not None and not (
            math.isfinite(pair[1] + step) and math.isfinite(pair[0] - step)
        ):
            problems.add(f"{here}.step", "takes the range past the largest number")
        elif step is not None and (pair[1] - pair[0]) / step > MAX_STEPS_IN_RANGE:
            problems.add(f"{here}.step", f"makes more than {MAX_STEPS_IN_RANGE:g} points")
        else:
            found[name] = Dist(kind, pair[0], pair[1], step, log)
    return found


def draw(dist: Dist, rng: random.Random) -> Any:
    """One value of ``dist``, the seeded random search's way."""
    if dist.kind == "choice":
        return rng.choice(dist.choices)
    if dist.kind == "int":
        low, high = int(dist.low), int(dist.high)
        if dist.log:
            return min(high, max(low, round(math.exp(rng.uniform(math.log(low), math.log(high))))))
        step = int(dist.step or 1)
        return low + step * rng.randint(0, (high - low) // step)
    if dist.kind == "uniform":
        if dist.step is not None:
            return on_step(dist, rng.uniform(dist.low, dist.high))
        return rng.uniform(dist.low, dist.high)
    return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))


def on_step(dist: Dist, value: float) -> float | int:
    """``value`` moved to the nearest point low + k * step within [low, high]."""
    step = float(dist.step or 1)
    k = min(round((value - dist.low) / step), math.floor((dist.high - dist.low) / step + 1e-9))
    return plain(dist.low + k * step)


def _random(search: orchestrator_pb2.RandomSearch, problems: Problems) -> list[dict[str, Any]]:
    where = "parameters.random"
    if not 1 <= search.trials <= MAX_TRIALS:
        problems.add(f"{where}.trials", f"must be 1 to {MAX_TRIALS}, got {search.trials}")
    space = plain(json_format.MessageToDict(search.parameters))
    dists = distributions(space, f"{where}.parameters", problems)
    if problems.found:
        return []
    rng = random.Random(search.seed)
    return [{name: draw(d, rng) for name, d in dists.items()} for _ in range(search.trials)]


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


def _objectives(spec: orchestrator_pb2.SweepSpec, problems: Problems) -> list[dict[str, str]]:
    """Several objectives, each with its goal filled in."""
    if not spec.objectives:
        return []
    if spec.objective.metric or spec.objective.HasField("goal"):
        problems.add("objective", "one objective or objectives, not both")
    if not 2 <= len(spec.objectives) <= MAX_OBJECTIVES:
        problems.add("objectives", f"must be 2 to {MAX_OBJECTIVES} (one: use objective)")
    found = []
    for i, objective in enumerate(spec.objectives[:MAX_OBJECTIVES]):
        if not NAME.fullmatch(objective.metric):
            problems.add(
                f"objectives[{i}].metric", "must be 1 to 64 letters, digits, '_', '.' or '-'"
            )
        if objective.HasField("goal") and objective.goal not in GOALS:
            problems.add(f"objectives[{i}].goal", 'must be "minimize" or "maximize"')
        found.append({"metric": objective.metric, "goal": objective.goal or "minimize"})
    metrics = [o["metric"] for o in found]
    if len(set(metrics)) != len(metrics):
        problems.add("objectives", "name each metric once")
    return found


def _search(spec: orchestrator_pb2.SweepSpec, problems: Problems) -> dict[str, Any] | None:
    """The adaptive search's settings, every default filled in; None without one."""
    if not spec.HasField("search"):
        return None
    search = spec.search
    sampler = search.sampler or "tpe"
    kind = spec.parameters.WhichOneof("space")
    if sampler not in SAMPLERS:
        problems.add("search.sampler", "must be one of " + ", ".join(SAMPLERS) + " (left out: tpe)")
    elif sampler == "grid" and kind != "grid":
        problems.add("parameters.grid", 'is the space of sampler "grid", and is required')
    elif kind not in ("random", "grid"):
        problems.add(
            "parameters.random.parameters",
            "is the space the sampler searches (or a grid, whose values are choices), and "
            "is required with search",
        )
    if kind == "random" and (spec.parameters.random.trials or spec.parameters.random.seed):
        problems.add(
            "parameters.random",
            "takes no trials or seed with search: search.trials and search.seed are those",
        )
    if not spec.objective.metric and not spec.objectives:
        problems.add("objective.metric", "is required with search: it is what the sampler learns")
    if spec.objectives and sampler in SAMPLERS and sampler not in MULTI_OBJECTIVE_SAMPLERS:
        problems.add(
            "search.sampler",
            f"{sampler} learns one objective; with objectives: "
            + ", ".join(MULTI_OBJECTIVE_SAMPLERS),
        )
    trials = search.trials
    if sampler == "grid" and kind == "grid":
        size = math.prod(len(v.list_value.values) for v in spec.parameters.grid.fields.values())
        trials = trials or min(size, MAX_TRIALS)
        if size > MAX_GRID:
            problems.add(
                "parameters.grid", f"has {size} combinations; sampler grid takes {MAX_GRID}"
            )
        elif trials > size:
            problems.add("search.trials", f"must be at most the grid's {size} combinations")
    if not 1 <= trials <= MAX_TRIALS:
        problems.add("search.trials", f"must be 1 to {MAX_TRIALS}, got {trials}")
    return {"sampler": sampler, "trials": trials, "seed": search.seed}


def _early_stopping(spec: orchestrator_pb2.SweepSpec, problems: Problems) -> dict[str, Any] | None:
    """The early-stopping rule's settings, every default filled in; None without one."""
    if not spec.HasField("early_stopping"):
        return None
    rule = spec.early_stopping
    where = "earlyStopping"
    if spec.objectives:
        problems.add(where, "judges one objective: not with objectives")
    if not spec.HasField("search"):
        problems.add(where, 'needs search (for a grid: {"search": {"sampler": "grid"}})')
    if rule.rule not in RULES:
        problems.add(f"{where}.rule", "must be one of " + ", ".join(RULES))
        return None
    metric = rule.metric or spec.objective.metric
    goal = rule.goal if rule.HasField("goal") else spec.objective.goal or "minimize"
    step_key = rule.step_key or "step"
    for name, value in (("metric", metric), ("stepKey", step_key)):
        if not NAME.fullmatch(value):
            problems.add(f"{where}.{name}", "must be 1 to 64 letters, digits, '_', '.' or '-'")
    if goal not in GOALS:
        problems.add(f"{where}.goal", 'must be "minimize" or "maximize"')
    found: dict[str, Any] = {"rule": rule.rule, "metric": metric, "goal": goal, "stepKey": step_key}
    settings = RULE_SETTINGS[rule.rule]
    for field in rule.DESCRIPTOR.fields:
        if field.name in ("rule", "metric", "goal", "step_key") or not rule.HasField(field.name):
            continue
        if field.json_name not in settings:
            problems.add(f"{where}.{field.json_name}", f"is not a setting of rule {rule.rule}")
    for name, (low, high, default) in settings.items():
        field_name = re.sub(r"([A-Z])", r"_\1", name).lower()
        setting = float(getattr(rule, field_name) if rule.HasField(field_name) else default)
        if not (math.isfinite(setting) and low <= setting <= high) or (
            name == "percentile" and setting in (0, 100)
        ):
            problems.add(f"{where}.{name}", f"must be {low:g} to {high:g}, got {setting:g}")
        found[name] = plain(setting)
    if rule.rule == "hyperband" and found.get("maxResource", 0) <= found.get("minResource", 0):
        problems.add(f"{where}.maxResource", "must be above minResource")
    return found


def _stopping(spec: orchestrator_pb2.SweepSpec, problems: Problems) -> dict[str, Any]:
    """maxDurationSeconds and target, as stored."""
    found: dict[str, Any] = {}
    if spec.HasField("max_duration_seconds"):
        seconds = spec.max_duration_seconds
        if not (math.isfinite(seconds) and 1 <= seconds <= MAX_DURATION_SECONDS):
            problems.add("maxDurationSeconds", f"must be 1 to {MAX_DURATION_SECONDS:g}")
        found["maxDurationSeconds"] = plain(seconds)
    if spec.HasField("target"):
        metric = spec.target.metric or spec.objective.metric
        if spec.objectives:
            problems.add("target", "is a value of one objective: not with objectives")
        elif not spec.objective.metric:
            problems.add("objective.metric", "is required with a target")
        elif metric != spec.objective.metric:
            problems.add("target.metric", "must be the objective's metric (or left out)")
        if not math.isfinite(spec.target.value):
            problems.add("target.value", "must be a finite number")
        found["target"] = {"metric": metric, "value": plain(spec.target.value)}
    return found


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
    search = _search(spec, problems) if spec.script else None
    if spec.HasField("search") and not spec.script:
        problems.add("search", "needs a script")
    early_stopping = _early_stopping(spec, problems)
    stopping = _stopping(spec, problems)
    if search is None:
        sets = _parameter_sets(spec, problems) if spec.script else []
    else:
        sets = []
        space = space_of(spec, problems)
        from orchestrator_svc.search import check_space  # it builds on this module

        for where, rule in check_space(space):
            problems.add(f"parameters.random.parameters.{where}", rule)
        largest = _largest_params_bytes(space)
        if largest > MAX_PARAMS_BYTES:
            problems.add(
                "parameters",
                f"a trial's parameters may take {largest} bytes, over {MAX_PARAMS_BYTES}",
            )
    if spec.objective.metric and not NAME.fullmatch(spec.objective.metric):
        problems.add("objective.metric", "must be 1 to 64 letters, digits, '_', '.' or '-'")
    if spec.objective.HasField("goal") and spec.objective.goal not in GOALS:
        problems.add("objective.goal", 'must be "minimize" or "maximize" (left out: minimize)')
    if spec.objective.HasField("goal") and not spec.objective.metric:
        problems.add("objective.metric", "is required with a goal")
    objectives = _objectives(spec, problems)
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
    if objectives:
        normalised["objectives"] = objectives
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
    for key, value in (("search", search), ("earlyStopping", early_stopping)):
        if value is not None:
            normalised[key] = value
    normalised.update(stopping)
    return Plan(task=task, spec=normalised, trials=trials)


def space_of(spec: orchestrator_pb2.SweepSpec, problems: Problems) -> dict[str, Dist]:
    """An adaptive search's space: the random distributions, or a grid's lists as
    choices."""
    kind = spec.parameters.WhichOneof("space")
    values = spec.parameters.grid if kind == "grid" else spec.parameters.random.parameters
    if next(_not_finite(values, "p"), None) is not None:
        problems.add(f"parameters.{kind}", "must hold finite numbers, not NaN or infinity")
        return {}
    if kind == "grid":
        grid = plain(json_format.MessageToDict(spec.parameters.grid))
        if not grid:
            problems.add("parameters.grid", "must name at least one parameter")
        _names(list(grid), "parameters.grid", problems)
        for name in sorted(grid):
            values = grid[name]
            if not isinstance(values, list) or not 1 <= len(values) <= MAX_VALUES:
                problems.add(f"parameters.grid.{name[:64]}", f"must list 1 to {MAX_VALUES} values")
        if problems.found:
            return {}
        return {name: Dist("choice", choices=tuple(grid[name])) for name in sorted(grid)}
    space = plain(json_format.MessageToDict(spec.parameters.random.parameters))
    return distributions(space, "parameters.random.parameters", problems)


def _largest_params_bytes(space: dict[str, Dist]) -> int:
    """The most bytes of JSON a trial's parameters drawn from `space` can take."""
    number = 24  # a double's longest repr
    total = 2
    for name, dist in space.items():
        if dist.kind == "choice":
            value = max(len(json.dumps(choice)) for choice in dist.choices)
        else:
            value = number
        total += len(json.dumps(name)) + 2 + value
    return total


def stored_space(spec: dict[str, Any]) -> dict[str, Dist]:
    """The space of a stored (so already checked) adaptive spec."""
    message = json_format.ParseDict(
        {"parameters": spec.get("parameters", {})}, orchestrator_pb2.SweepSpec()
    )
    problems = Problems()
    space = space_of(message, problems)
    if problems.found:
        raise ValueError(f"stored space breaks the rules: {problems.found[0]}")
    return space


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
