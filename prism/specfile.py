"""What `prism run` sends: a sweep spec from a trial script and command-line flags, or from a
spec file (TOML, YAML or JSON, the same fields as the API's JSON spec).

    prism run train.py -p lr=loguniform:1e-4:1e-1 -p layers=1,2,3 --trials 20 --objective loss:min
    prism run sweep.toml

The flags are described in FLAGS_HELP below.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from prism.client import json_name

FLAGS_HELP = """\
A `-p NAME=VALUES` is one of:

    NAME=1,2,3                 the listed values (numbers, true/false and null read as JSON,
                               anything else as a string); one value is a list of one
    NAME=uniform:LOW:HIGH      a float drawn uniformly
    NAME=uniform:LOW:HIGH:STEP only LOW, LOW+STEP, ... up to HIGH
    NAME=loguniform:LOW:HIGH   a float drawn uniformly in log space (0 < LOW)
    NAME=int:LOW:HIGH          an integer, both ends included
    NAME=int:LOW:HIGH:STEP     only LOW, LOW+STEP, ... up to HIGH
    NAME=int:LOW:HIGH:log      an integer drawn in log space (0 < LOW)
    NAME=choice:A,B,C          one of the values

With only listed values the sweep is a grid (every combination); `--trials N` or any
distribution makes it a random search of N trials, listed values becoming choices.

Adaptive search: `--sampler tpe|cmaes|nsga2|qmc|random|grid` asks for each trial's parameters
as a slot frees, learning from the results so far, from the -p space (listed values
become choices; `grid` takes listed values only and searches their combinations). It
needs `--objective`, and `--trials N` as its budget (for `grid`, left out: every
combination); `--seed` fixes its draws. `--prune asha|median|percentile|hyperband` stops
losing trials early on their live PRISM_METRIC lines: the objective's metric and goal
unless `--prune-metric METRIC[:min|max]`, the step in the line's `step` key unless
`--step-key KEY`, and the rule's settings as `--prune-setting NAME=VALUE` (asha,
hyperband: minResource, reductionFactor, hyperband's maxResource; median, percentile:
startupTrials, warmupSteps, intervalSteps, percentile's percentile).

Any sweep: `--target VALUE` ends it once a trial's objective is VALUE or better,
`--max-duration SECONDS` that long after it started (trials not started are cancelled,
running ones stopped). A pruned trial, or one a target or deadline cancelled, is no
failure: the exit status stays 0.

A spec file may name its script with `scriptFile` (a path relative to the file) instead of
giving the source as `script`. Its keys are the JSON spec's (`maxParallel`) or the proto's
(`max_parallel`); an unknown key is an error naming it, before anything is sent.
"""

SPEC_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
# The service's samplers and early-stopping rules (orchestrator_svc.spec has the rules).
SAMPLERS = ("tpe", "cmaes", "nsga2", "qmc", "random", "grid")
RULES = ("median", "percentile", "asha", "hyperband")
GOALS = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}
# Larger than any script the API accepts, so that the API names the rule; a bound on reading.
MAX_SCRIPT_BYTES = 1024 * 1024


class SpecError(ValueError):
    """The command line or the spec file is wrong; the message says where."""


def scalar(text: str) -> Any:
    """A value as typed on the command line: JSON numbers, true/false and null as such,
    anything else as the string itself (`adam`, not `"adam"`); not NaN or infinite."""
    if not text:
        raise SpecError("-p: an empty value (write -p NAME=VALUE,VALUE...)")
    try:
        value = json.loads(text, parse_constant=_not_a_number)
    except SpecError:
        raise
    except json.JSONDecodeError:
        return text
    except ValueError:  # an integer past Python's limit of digits
        raise SpecError(f"-p: {text[:20]}…: too long a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"-p: {text!r} is not a finite number")
    return value if value is None or isinstance(value, bool | int | float) else text


def _not_a_number(name: str) -> float:
    raise SpecError(f"-p: {name} is not a finite number")


# What may follow a distribution's LOW:HIGH, and how its usage is written.
EXTRAS = {"uniform": ("step",), "int": ("step", "log"), "loguniform": ()}
USAGE = {
    "uniform": "uniform:LOW:HIGH[:STEP]",
    "int": "int:LOW:HIGH[:STEP|log]",
    "loguniform": "loguniform:LOW:HIGH",
}


def parameter(flag: str) -> tuple[str, list[Any] | dict[str, Any]]:
    """One `-p NAME=VALUES`: its name and either its listed values or its distribution."""
    name, equals, values = flag.partition("=")
    name = name.strip()
    if not equals or not name:
        raise SpecError(f"-p {flag!r}: expected NAME=VALUES, e.g. lr=0.1,0.01 or lr=uniform:0:1")
    kind, colon, rest = values.partition(":")
    if colon and kind in DISTRIBUTIONS:
        if kind == "choice":
            return name, {"choice": [scalar(v) for v in rest.split(",")]}
        parts = rest.split(":")
        found: dict[str, Any] = {kind: [scalar(b) for b in parts[:2]]}
        extra = parts[2:]
        if extra == ["log"] and "log" in EXTRAS[kind]:
            found["log"] = True
        elif len(extra) == 1 and "step" in EXTRAS[kind]:
            found["step"] = scalar(extra[0])
        numbers = [*found[kind], found.get("step", 0)]
        if len(parts) < 2 or len(found) != 1 + len(extra) or not all(map(_number, numbers)):
            raise SpecError(f"-p {flag!r}: {kind} takes two numbers, {USAGE[kind]}")
        return name, found
    return name, [scalar(v) for v in values.split(",")]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parameters(
    flags: list[str], trials: int | None, seed: int | None, sampler: str | None = None
) -> dict[str, Any] | None:
    """The spec's `parameters` from the -p flags (None without any): a grid, a random
    search, or with a sampler the space it searches (its trials and seed are the
    search's, see `search`)."""
    space: dict[str, list[Any] | dict[str, Any]] = {}
    for flag in flags:
        name, values = parameter(flag)
        if name in space:
            raise SpecError(f"-p {name}: given twice")
        space[name] = values
    if not space:
        if sampler is not None:
            raise SpecError("--sampler needs parameters to search (-p NAME=uniform:LOW:HIGH ...)")
        if trials is not None:
            raise SpecError("--trials needs parameters to draw (-p NAME=uniform:LOW:HIGH ...)")
        return None
    drawn = {n: v if isinstance(v, dict) else {"choice": v} for n, v in space.items()}
    if sampler == "grid":
        if any(isinstance(v, dict) for v in space.values()):
            raise SpecError("--sampler grid searches listed values only (-p NAME=A,B,C)")
        return {"grid": space}
    if sampler is not None:
        return {"random": {"parameters": drawn}}
    randomised = trials is not None or any(isinstance(v, dict) for v in space.values())
    if not randomised:
        if seed is not None:
            raise SpecError("--seed is for a random search: give --trials N too")
        return {"grid": space}
    if trials is None:
        raise SpecError("a distribution draws --trials N parameter sets: give --trials")
    return {"random": {"trials": trials, "seed": seed or 0, "parameters": drawn}}


def search(sampler: str, trials: int | None, seed: int | None) -> dict[str, Any]:
    """The spec's `search` from --sampler, --trials (its budget) and --seed."""
    if trials is None and sampler != "grid":
        raise SpecError(f"--sampler {sampler} needs a budget: give --trials N")
    found: dict[str, Any] = {"sampler": sampler}
    if trials is not None:
        found["trials"] = trials
    if seed is not None:
        found["seed"] = seed
    return found


def early_stopping(
    rule: str, metric: str | None, step_key: str | None, settings: list[str]
) -> dict[str, Any]:
    """The spec's `earlyStopping` from --prune RULE, --prune-metric METRIC[:min|max],
    --step-key and each --prune-setting NAME=VALUE (NAME as in the JSON spec or the
    proto); what is left out is the service's default (the objective's metric and goal)."""
    found: dict[str, Any] = {"rule": rule}
    if metric is not None:
        name, _, goal = metric.partition(":")
        if not name or (goal and goal not in GOALS):
            raise SpecError(
                f"--prune-metric {metric!r}: expected METRIC or METRIC:min or METRIC:max"
            )
        found["metric"] = name
        if goal:
            found["goal"] = GOALS[goal]
    if step_key is not None:
        found["stepKey"] = step_key
    for setting in settings:
        name, equals, text = setting.partition("=")
        value = scalar(text) if equals and text else None
        if not name or not _number(value):
            raise SpecError(f"--prune-setting {setting!r}: expected NAME=NUMBER")
        if json_name(name) in found:
            raise SpecError(f"--prune-setting {name}: given twice")
        found[json_name(name)] = value
    return found


def objective(flag: str) -> dict[str, str]:
    """`--objective loss`, `loss:min` or `accuracy:max`."""
    metric, _, goal = flag.partition(":")
    if not metric or (goal and goal not in GOALS):
        raise SpecError(f"--objective {flag!r}: expected METRIC or METRIC:min or METRIC:max")
    return {"metric": metric, "goal": GOALS[goal or "min"]}


def read_script(path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SCRIPT_BYTES + 1)
    except OSError as error:
        raise SpecError(f"{path}: {error.strerror or error}") from None
    if len(data) > MAX_SCRIPT_BYTES:
        raise SpecError(f"{path}: larger than {MAX_SCRIPT_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text") from None


def load(path: Path) -> dict[str, Any]:
    """A spec file as the API's JSON spec (its `scriptFile` read into `script`)."""
    text = read_script(path)
    try:
        if path.suffix == ".toml":
            spec: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            spec = yaml.safe_load(text)
        else:
            spec = json.loads(text)
    except (ValueError, yaml.YAMLError) as error:
        raise SpecError(f"{path}: {error}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: expected a mapping of the spec's fields at the top")
    script_file = spec.pop("scriptFile", None)
    if script_file is not None:
        if "script" in spec:
            raise SpecError(f"{path}: give script or scriptFile, not both")
        if not isinstance(script_file, str):
            raise SpecError(f"{path}: scriptFile must be a path")
        spec["script"] = read_script(path.parent / script_file)
    return spec


def overridden(spec: dict[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with the fields given on the command line in place of its own: `task`,
    `maxParallel`, `retries`, `maxDurationSeconds`, `objective`, `target.value`,
    `requirements` (added) and `limits.*`."""
    spec = {key: value for key, value in spec.items() if value is not None}  # null: left out
    for key in ("task", "maxParallel", "retries", "maxDurationSeconds"):
        if flags.get(key) is not None:
            spec.pop(_snake(key), None)
            spec[key] = flags[key]
    if flags.get("objective"):
        spec["objective"] = objective(flags["objective"])
    if flags.get("target") is not None:
        own = spec.get("target") or {}
        if not isinstance(own, dict):
            raise SpecError("target: expected a mapping, e.g. {value: 0.05}")
        spec["target"] = {**own, "value": flags["target"]}
    if flags.get("requirements"):
        own = spec.get("requirements", [])
        if not isinstance(own, list):
            raise SpecError("requirements: expected a list, e.g. [numpy, scipy>=1.11]")
        spec["requirements"] = [*own, *flags["requirements"]]
    limits = {k: v for k, v in flags.get("limits", {}).items() if v is not None}
    if limits:
        own = spec.get("limits", {})
        if not isinstance(own, dict):
            raise SpecError("limits: expected a mapping, e.g. {wallSeconds: 60}")
        spec["limits"] = {k: v for k, v in own.items() if json_name(k) not in limits} | limits
    return spec


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
