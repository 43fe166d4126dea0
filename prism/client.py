"""A Python client of the Prism API, over gRPC with the generated stubs.

    from prism.client import Client, Objective, SweepSpec, choice, loguniform, random_search

    with Client() as prism:
        sweep = prism.create(
            SweepSpec(
                task="tune the learning rate",
                script=open("train.py").read(),
                parameters=random_search(20, lr=loguniform(1e-4, 1e-1), layers=choice(1, 2, 3)),
                objective=Objective("loss", "minimize"),
            )
        )
        done = prism.wait(sweep.id)
        print(done.state, done.best_trial.params)

Where it connects: `target`, else PRISM_ADDRESS, else the gateway on 127.0.0.1:8080 (the
orchestrator's own port answers the same calls). Its token: `token`, else the file
PRISM_API_TOKEN_FILE names, else PRISM_API_TOKEN, else the api_token file under PRISM_DATA_DIR
(.prism), which `make up` writes. A client may be shared by threads (its gRPC channel is).

An adaptive search asks for each trial's parameters as a slot frees, learning from the
results so far; it may stop losing trials early, and the sweep at a target or a deadline:

    SweepSpec(
        task="tune the learning rate",
        script=open("train.py").read(),
        parameters=search_space(lr=loguniform(1e-4, 1e-1), layers=integer(1, 8)),
        objective=Objective("loss"),
        search=Search("tpe", trials=50, seed=1),
        early_stopping=EarlyStopping("asha", reduction_factor=2),
        target=Target(0.05),
        max_duration_seconds=3600,
    )

Answers are the API's own messages (prism.v1.orchestrator_pb2, typed: a pruned trial's
`pruned_step` and `pruned_value`, a sweep's `stop_reason`, `history` and `counts.pruned`);
a watch yields `Event`s. Errors are raised as `ApiError` and its subclasses:

    ApiError                   any other status (its `code` says which)
    ├── InvalidArgument        INVALID_ARGUMENT: `violations` names each field and its rule
    ├── NotFound               NOT_FOUND
    ├── Unauthenticated        UNAUTHENTICATED: a missing or wrong token
    ├── Unavailable            UNAVAILABLE: the service is unreachable, recovering or closed
    ├── DeadlineExceeded       DEADLINE_EXCEEDED
    └── Internal               INTERNAL: the service failed (its message has an error id)

Every call has a deadline (`timeout`, 30 s); a watch has none unless given, and after a dropped
connection it reconnects and resumes after the last event it yielded. `AsyncClient` is the
asyncio twin, with the same calls.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from prism.environ import env, read_secret
from prism.files import write_whole
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0
# How long a watch keeps trying to reconnect before it gives up.
RECONNECT_SECONDS = 60.0
_PAGE = 100
# Trials a ListTrials page asks for: the most the service gives.
_TRIALS_PAGE = 1000
# A trial's logs (16 MiB), an artifact (4 MiB) or a sweep (8 MiB of trials) is more than
# gRPC's default 4 MiB a message.
MAX_MESSAGE_BYTES = 64 * 2**20
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
# A watch reconnects after waiting this long, doubled each time, at most MAX.
RECONNECT_BACKOFF_SECONDS, MAX_RECONNECT_BACKOFF_SECONDS = 0.5, 5.0


# Errors.


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ApiError(Exception):
    """A call the service answered with an error status, or could not be made."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(f"{code.name.lower()}: {message}")
        self.code = code
        self.message = message
        self.violations = tuple(violations)

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (process pools, multiprocessing), as its own class.
        return (type(self), (self.code, self.message, self.violations))


class InvalidArgument(ApiError):
    pass


class NotFound(ApiError):
    pass


class Unauthenticated(ApiError):
    pass


class Unavailable(ApiError):
    pass


class DeadlineExceeded(ApiError):
    pass


class Internal(ApiError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
}


def error_from(error: grpc.RpcError) -> ApiError:
    """The ApiError for a failed call, with the field violations of its rich status."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message: str = error.details() or ""  # type: ignore[attr-defined]
    violations = []
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            continue  # details that cannot be read: the code and message stand alone
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                request = error_details_pb2.BadRequest()
                detail.Unpack(request)
                violations += [
                    FieldViolation(v.field, v.description) for v in request.field_violations
                ]
    return _BY_CODE.get(code, ApiError)(code, message, violations)


class UnsafeArtifactName(ValueError):
    """An artifact name that would land outside the download's folder."""


# The sweep spec.


@dataclass(frozen=True)
class Distribution:
    """One parameter's distribution in a random or adaptive search."""

    kind: str
    values: tuple[Any, ...]
    # Only values low + k * step (uniform, int); None: any.
    step: float | None = None
    # An int drawn evenly in log space.
    log: bool = False

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {self.kind: list(self.values)}
        if self.step is not None:
            found["step"] = self.step
        if self.log:
            found["log"] = True
        return found


def uniform(low: float, high: float, *, step: float | None = None) -> Distribution:
    """A float from low to high; with `step`, only low, low + step, ... up to high."""
    return Distribution("uniform", (low, high), step=step)


def loguniform(low: float, high: float) -> Distribution:
    return Distribution("loguniform", (low, high))


def integer(low: int, high: int, *, step: int | None = None, log: bool = False) -> Distribution:
    """An integer from low to high, both included; with `step`, only low, low + step, ...;
    with `log`, drawn evenly in log space (0 < low), as a batch size or a width is."""
    return Distribution("int", (low, high), step=step, log=log)


def choice(*values: Any) -> Distribution:
    return Distribution("choice", values)


@dataclass(frozen=True)
class Parameters:
    """How a sweep chooses its parameter sets: one of grid, random_search, listed."""

    space: dict[str, Any]


def grid(**values: Sequence[Any]) -> Parameters:
    """Every combination of the listed values."""
    return Parameters({"grid": {name: list(v) for name, v in values.items()}})


def random_search(
    trials: int,
    space: Mapping[str, Distribution] | None = None,
    /,
    *,
    seed: int = 0,
    **distributions: Distribution,
) -> Parameters:
    """`trials` sets drawn from the distributions, given as keywords or as a mapping (a
    parameter named `seed` needs the mapping); the same seed draws the same sets."""
    parameters = {name: d.to_json() for name, d in {**(space or {}), **distributions}.items()}
    return Parameters({"random": {"trials": trials, "seed": seed, "parameters": parameters}})


def search_space(
    space: Mapping[str, Distribution] | None = None, /, **distributions: Distribution
) -> Parameters:
    """The distributions an adaptive search explores, given as keywords or as a mapping:
    no trials or seed, which are the Search's (a grid is a search space too)."""
    parameters = {name: d.to_json() for name, d in {**(space or {}), **distributions}.items()}
    return Parameters({"random": {"parameters": parameters}})


def listed(*sets: Mapping[str, Any]) -> Parameters:
    """Exactly these parameter sets, in order."""
    return Parameters({"list": [dict(s) for s in sets]})


@dataclass(frozen=True)
class Objective:
    metric: str
    goal: str = "minimize"


@dataclass(frozen=True)
class Search:
    """Adaptive search: the sampler ("tpe", "cmaes", "nsga2", "qmc", "random" or "grid") asks for
    each trial's parameters as a runner slot frees, from what the results so far say.
    `trials` is the budget (0: a grid's size, for "grid" only); the seed fixes every
    draw given the same results."""

    sampler: str = "tpe"
    trials: int = 0
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"sampler": self.sampler}
        if self.trials:
            found["trials"] = self.trials
        if self.seed:
            found["seed"] = self.seed
        return found


@dataclass(frozen=True)
class EarlyStopping:
    """Stops a search's losing trials on their live PRISM_METRIC lines: `rule` is
    "median", "percentile", "asha" or "hyperband". The metric and goal judged are the
    objective's unless given; the step is the metric line's `step_key` ("step"). The
    rule's settings (None: the service's default) are asha's and hyperband's
    min_resource, reduction_factor (and hyperband's max_resource), and median's and
    percentile's startup_trials, warmup_steps, interval_steps (and percentile's
    percentile)."""

    rule: str
    metric: str = ""
    goal: str = ""
    step_key: str = ""
    min_resource: int | None = None
    max_resource: int | None = None
    reduction_factor: int | None = None
    startup_trials: int | None = None
    warmup_steps: int | None = None
    percentile: float | None = None
    interval_steps: int | None = None

    def to_json(self) -> dict[str, Any]:
        return _set_fields(self)


@dataclass(frozen=True)
class Target:
    """The sweep ends once a trial's objective is `value` or better (the metric, if
    given, must be the objective's)."""

    value: float
    metric: str = ""

    def to_json(self) -> dict[str, Any]:
        return _set_fields(self)


def _set_fields(settings: Any) -> dict[str, Any]:
    """A settings dataclass as the JSON API takes it: the fields given, by JSON name
    (one left None or "" is left out, for the service's default)."""
    return {
        json_name(name): value
        for name, value in vars(settings).items()
        if value is not None and value != ""
    }


@dataclass(frozen=True)
class Limits:
    """A trial's limits; None keeps the service's default."""

    wall_seconds: float | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    processes: int | None = None
    output_kb: int | None = None
    workspace_mb: int | None = None


@dataclass(frozen=True)
class SweepSpec:
    """A sweep as the API takes it (see the README's spec reference for every rule)."""

    task: str
    script: str = ""
    parameters: Parameters | None = None
    objective: Objective | None = None
    max_parallel: int = 0
    retries: int = 0
    limits: Limits = field(default_factory=Limits)
    requirements: Sequence[str] = ()
    examples: Sequence[str] = ()
    search: Search | None = None
    early_stopping: EarlyStopping | None = None
    target: Target | None = None
    # The sweep's deadline from its creation; None: none.
    max_duration_seconds: float | None = None
    # Several objectives instead of `objective`: the answer's pareto_front.
    objectives: Sequence[Objective] = ()

    def __post_init__(self) -> None:
        for name in ("requirements", "examples"):
            if isinstance(getattr(self, name), str):
                raise TypeError(f"SweepSpec.{name} is a list of strings, not one string")
        random = self.parameters.space.get("random") if self.parameters else None
        if self.search is not None and isinstance(random, dict) and "trials" in random:
            raise ValueError(
                "with search, give the parameters as search_space(...): the Search has "
                "the trials and the seed, random_search(...) has its own"
            )

    def to_json(self) -> dict[str, Any]:
        """The spec as the JSON API takes it."""
        spec: dict[str, Any] = {"task": self.task}
        if self.script:
            spec["script"] = self.script
        if self.examples:
            spec["examples"] = list(self.examples)
        if self.parameters is not None:
            spec["parameters"] = self.parameters.space
        if self.objective is not None:
            spec["objective"] = {"metric": self.objective.metric, "goal": self.objective.goal}
        if self.objectives:
            spec["objectives"] = [{"metric": o.metric, "goal": o.goal} for o in self.objectives]
        if self.max_parallel:
            spec["maxParallel"] = self.max_parallel
        if self.retries:
            spec["retries"] = self.retries
        limits = {
            json_name(name): value for name, value in vars(self.limits).items() if value is not None
        }
        if limits:
            spec["limits"] = limits
        if self.requirements:
            spec["requirements"] = list(self.requirements)
        for name in ("search", "early_stopping", "target"):
            settings = getattr(self, name)
            if settings is not None:
                spec[json_name(name)] = settings.to_json()
        if self.max_duration_seconds is not None:
            spec["maxDurationSeconds"] = self.max_duration_seconds
        return spec

    def to_proto(self) -> orchestrator_pb2.SweepSpec:
        return spec_message(self.to_json())


def json_name(name: str) -> str:
    """A field's name in the JSON spec: `max_parallel` is `maxParallel`."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def spec_message(spec: Mapping[str, Any]) -> orchestrator_pb2.SweepSpec:
    """A JSON spec (as a dict) as the API's message; a field it does not have is an
    InvalidArgument naming it, not dropped."""
    try:
        return json_format.ParseDict(dict(spec), orchestrator_pb2.SweepSpec())
    except json_format.ParseError as error:
        raise InvalidArgument(
            grpc.StatusCode.INVALID_ARGUMENT,
            str(error),
            [FieldViolation("sweep", str(error))],
        ) from None


# Events.


@dataclass(frozen=True)
class Event:
    """One event of a sweep's log (see the README's event kinds)."""

    seq: int
    kind: str
    # The trial it is about; None for the sweep's own events.
    trial_index: int | None
    data: dict[str, Any]
    time: float
    # The last event of the watch: the sweep has its final state.
    final: bool
    # The sweep's state, on the final event.
    sweep_state: str

    @classmethod
    def from_proto(cls, event: orchestrator_pb2.SweepEvent) -> Event:
        return cls(
            seq=event.seq,
            kind=event.kind,
            trial_index=event.trial_index if event.trial_index >= 0 else None,
            data=json_format.MessageToDict(event.data),
            time=event.time.ToMicroseconds() / 1e6,
            final=event.final,
            sweep_state=event.sweep_state,
        )


# The client.


def default_token() -> str | None:
    found = read_secret("PRISM_API_TOKEN")
    if found:
        return found
    path = Path(env("PRISM_DATA_DIR", ".prism")) / "api_token"
    return path.read_text().strip() if path.is_file() else None


def _ended_early() -> Unavailable:
    return Unavailable(
        grpc.StatusCode.UNAVAILABLE, "the event stream ended before the sweep's final event"
    )


class _Resumption:
    """A watch's place in the event log, and its patience with failing streams: a failure
    of the connection or of the service (UNAVAILABLE; INTERNAL, which is also what a proxy
    reports when its upstream dies; an `error` event) is retried with growing waits for
    `reconnect_seconds` in a row, from the last event yielded. Anything else is raised."""

    RETRIED = (Unavailable, Internal)

    def __init__(self, after_seq: int, reconnect_seconds: float) -> None:
        self.after_seq = after_seq
        self._patience = reconnect_seconds
        self._failing_since: float | None = None
        self._failures = 0

    def read(self, message: orchestrator_pb2.SweepEvent) -> Event | None:
        """The event to yield, if any (raises for an `error` event)."""
        if message.kind == "error":
            text = str(json_format.MessageToDict(message.data).get("message", ""))
            raise Internal(grpc.StatusCode.INTERNAL, text)
        self._failing_since, self._failures = None, 0  # the stream works
        if message.kind == "heartbeat":
            return None
        event = Event.from_proto(message)
        self.after_seq = max(self.after_seq, event.seq)
        return event

    def failed(self, error: ApiError) -> None:
        if not isinstance(error, self.RETRIED):
            raise error
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        if now - self._failing_since > self._patience:
            raise error

    def backoff(self) -> float:
        wait = RECONNECT_BACKOFF_SECONDS * 2**self._failures
        self._failures += 1
        return float(min(wait, MAX_RECONNECT_BACKOFF_SECONDS))


def _where(target: str | None, token: str | None) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The address to call, and the metadata that carries the token."""
    address = target or env("PRISM_ADDRESS", DEFAULT_ADDRESS)
    return address, (("authorization", f"Bearer {token or default_token() or ''}"),)


class Client:
    """The Prism API over one gRPC channel. Use it as a context manager, or close() it."""

    def __init__(
        self,
        target: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.target, self._metadata = _where(target, token)
        self._timeout = timeout
        self._channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._stub = orchestrator_pb2_grpc.OrchestratorStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        """Any unary method of the service by name (the demo's own calls have no wrapper),
        with its errors raised as ApiErrors; `timeout` defaults to the client's."""
        try:
            return getattr(self._stub, method)(
                request, metadata=self._metadata, timeout=timeout or self._timeout
            )
        except grpc.RpcError as error:
            raise error_from(error) from None

    def create(self, spec: SpecLike, *, request_id: str = "") -> orchestrator_pb2.Sweep:
        """Start a sweep. With a request id, a repeated call (a retry after a lost answer)
        returns the sweep the first one started instead of starting another."""
        sweep: orchestrator_pb2.Sweep = self.call("CreateSweep", _create(spec, request_id))
        return sweep

    def get(self, sweep_id: str, *, all_trials: bool = False) -> orchestrator_pb2.Sweep:
        """The sweep with its first 1,000 trials; with `all_trials`, every one (the rest
        read page after page with ListTrials)."""
        sweep: orchestrator_pb2.Sweep = self.call(
            "GetSweep", orchestrator_pb2.GetSweepRequest(sweep_id=sweep_id)
        )
        if all_trials and sweep.next_trials_page_token:
            sweep.trials.extend(self.list_trials(sweep_id, page_token=sweep.next_trials_page_token))
            sweep.next_trials_page_token = ""
        return sweep

    def list_trials(
        self,
        sweep_id: str,
        *,
        state: str = "",
        outcome: str = "",
        order_by: str = "",
        page_size: int = _TRIALS_PAGE,
        page_token: str = "",
    ) -> Iterator[orchestrator_pb2.Trial]:
        """The sweep's trials in one state and with one outcome ("": any), by index or
        best first (`order_by` "objective"), page after page as the iteration needs them;
        from `page_token` on (a sweep's next_trials_page_token, say)."""
        while True:
            request = orchestrator_pb2.ListTrialsRequest(
                sweep_id=sweep_id,
                state=state,
                outcome=outcome,
                order_by=order_by,
                page_size=page_size,
                page_token=page_token,
            )
            page: orchestrator_pb2.ListTrialsResponse = self.call("ListTrials", request)
            yield from page.trials
            page_token = page.next_page_token
            if not page_token:
                return

    def trial(self, sweep_id: str, index: int) -> orchestrator_pb2.Trial:
        trial: orchestrator_pb2.Trial = self.call(
            "GetTrial", orchestrator_pb2.GetTrialRequest(sweep_id=sweep_id, index=index)
        )
        return trial

    def list(self, *, page_size: int = _PAGE) -> Iterator[orchestrator_pb2.Sweep]:
        """Every sweep, newest first, page after page as the iteration needs them."""
        token = ""
        while True:
            page: orchestrator_pb2.ListSweepsResponse = self.call(
                "ListSweeps",
                orchestrator_pb2.ListSweepsRequest(page_size=page_size, page_token=token),
            )
            yield from page.sweeps
            token = page.next_page_token
            if not token:
                return

    def cancel(self, sweep_id: str) -> orchestrator_pb2.Sweep:
        sweep: orchestrator_pb2.Sweep = self.call(
            "CancelSweep", orchestrator_pb2.CancelSweepRequest(sweep_id=sweep_id)
        )
        return sweep

    def watch(
        self,
        sweep_id: str,
        *,
        after_seq: int = 0,
        timeout: float | None = None,
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> Iterator[Event]:
        """The sweep's events after `after_seq`, then live ones, up to its final event
        (heartbeats left out). A dropped or failed stream is reopened, resuming after the
        last event yielded, for up to `reconnect_seconds` of failures in a row; an error
        the service answers (NOT_FOUND, INVALID_ARGUMENT, UNAUTHENTICATED) is raised at
        once, and DeadlineExceeded once `timeout` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        resume = _Resumption(after_seq, reconnect_seconds)
        while True:
            request = orchestrator_pb2.WatchSweepRequest(
                sweep_id=sweep_id, after_seq=resume.after_seq
            )
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            call = self._stub.WatchSweep(request, metadata=self._metadata, timeout=left)
            try:
                for message in call:
                    event = resume.read(message)
                    if event is not None:
                        yield event
                        if event.final:
                            return
                resume.failed(_ended_early())
            except grpc.RpcError as error:
                resume.failed(error_from(error))
            except ApiError as error:
                resume.failed(error)
            finally:
                call.cancel()
            time.sleep(resume.backoff())

    def wait(self, sweep_id: str, *, timeout: float | None = None) -> orchestrator_pb2.Sweep:
        """The sweep once it has its final state; DeadlineExceeded after `timeout` s."""
        for _ in self.watch(sweep_id, timeout=timeout):
            pass
        return self.get(sweep_id)

    def logs(self, sweep_id: str, index: int) -> orchestrator_pb2.TrialLogs:
        logs: orchestrator_pb2.TrialLogs = self.call(
            "GetTrialLogs", orchestrator_pb2.GetTrialLogsRequest(sweep_id=sweep_id, index=index)
        )
        return logs

    def artifacts(self, sweep_id: str, index: int) -> orchestrator_pb2.ListArtifactsResponse:
        found: orchestrator_pb2.ListArtifactsResponse = self.call(
            "ListArtifacts",
            orchestrator_pb2.ListArtifactsRequest(sweep_id=sweep_id, index=index),
        )
        return found

    def artifact(self, sweep_id: str, index: int, name: str) -> bytes:
        body = self.call(
            "GetArtifact",
            orchestrator_pb2.GetArtifactRequest(sweep_id=sweep_id, index=index, name=name),
        )
        return bytes(body.data)

    def download(
        self, sweep_id: str, index: int, dest: str | os.PathLike[str]
    ) -> builtins.list[Path]:
        """Write the trial's artifacts under `dest` (made if missing); their paths. A name
        that would land outside `dest` raises UnsafeArtifactName and writes nothing."""
        targets = _targets(Path(dest), [a.name for a in self.artifacts(sweep_id, index).artifacts])
        return [_write(target, self.artifact(sweep_id, index, name)) for name, target in targets]


SpecLike = SweepSpec | Mapping[str, Any] | orchestrator_pb2.SweepSpec


def _create(spec: SpecLike, request_id: str) -> orchestrator_pb2.CreateSweepRequest:
    if isinstance(spec, SweepSpec):
        message = spec.to_proto()
    elif isinstance(spec, orchestrator_pb2.SweepSpec):
        message = spec
    else:
        message = spec_message(spec)
    return orchestrator_pb2.CreateSweepRequest(sweep=message, request_id=request_id)


class AsyncClient:
    """The asyncio twin of Client (grpc.aio): the same calls, awaited; `list` and `watch`
    are async iterators. Use it as an async context manager, or await close()."""

    def __init__(
        self,
        target: str | None = None,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.target, self._metadata = _where(target, token)
        self._timeout = timeout
        # Made on first use, on the event loop that uses it (a grpc.aio channel belongs to
        # the loop it was made on, so a client may be made before asyncio.run).
        self._channel: grpc.aio.Channel | None = None
        self._stub: orchestrator_pb2_grpc.OrchestratorStub | None = None

    def _stubs(self) -> orchestrator_pb2_grpc.OrchestratorStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
            self._stub = orchestrator_pb2_grpc.OrchestratorStub(self._channel)
        return self._stub

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stubs(), method)(
                request, metadata=self._metadata, timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise error_from(error) from None

    async def create(self, spec: SpecLike, *, request_id: str = "") -> orchestrator_pb2.Sweep:
        sweep: orchestrator_pb2.Sweep = await self._call("CreateSweep", _create(spec, request_id))
        return sweep

    async def get(self, sweep_id: str, *, all_trials: bool = False) -> orchestrator_pb2.Sweep:
        sweep: orchestrator_pb2.Sweep = await self._call(
            "GetSweep", orchestrator_pb2.GetSweepRequest(sweep_id=sweep_id)
        )
        if all_trials and sweep.next_trials_page_token:
            token = sweep.next_trials_page_token
            sweep.trials.extend([t async for t in self.list_trials(sweep_id, page_token=token)])
            sweep.next_trials_page_token = ""
        return sweep

    async def list_trials(
        self,
        sweep_id: str,
        *,
        state: str = "",
        outcome: str = "",
        order_by: str = "",
        page_size: int = _TRIALS_PAGE,
        page_token: str = "",
    ) -> AsyncIterator[orchestrator_pb2.Trial]:
        while True:
            request = orchestrator_pb2.ListTrialsRequest(
                sweep_id=sweep_id,
                state=state,
                outcome=outcome,
                order_by=order_by,
                page_size=page_size,
                page_token=page_token,
            )
            page: orchestrator_pb2.ListTrialsResponse = await self._call("ListTrials", request)
            for trial in page.trials:
                yield trial
            page_token = page.next_page_token
            if not page_token:
                return

    async def trial(self, sweep_id: str, index: int) -> orchestrator_pb2.Trial:
        trial: orchestrator_pb2.Trial = await self._call(
            "GetTrial", orchestrator_pb2.GetTrialRequest(sweep_id=sweep_id, index=index)
        )
        return trial

    async def list(self, *, page_size: int = _PAGE) -> AsyncIterator[orchestrator_pb2.Sweep]:
        token = ""
        while True:
            page: orchestrator_pb2.ListSweepsResponse = await self._call(
                "ListSweeps",
                orchestrator_pb2.ListSweepsRequest(page_size=page_size, page_token=token),
            )
            for sweep in page.sweeps:
                yield sweep
            token = page.next_page_token
            if not token:
                return

    async def cancel(self, sweep_id: str) -> orchestrator_pb2.Sweep:
        sweep: orchestrator_pb2.Sweep = await self._call(
            "CancelSweep", orchestrator_pb2.CancelSweepRequest(sweep_id=sweep_id)
        )
        return sweep

    async def watch(
        self,
        sweep_id: str,
        *,
        after_seq: int = 0,
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> AsyncIterator[Event]:
        """As Client.watch; bound it with asyncio.timeout."""
        resume = _Resumption(after_seq, reconnect_seconds)
        while True:
            request = orchestrator_pb2.WatchSweepRequest(
                sweep_id=sweep_id, after_seq=resume.after_seq
            )
            call = self._stubs().WatchSweep(request, metadata=self._metadata)
            try:
                async for message in call:
                    event = resume.read(message)
                    if event is not None:
                        yield event
                        if event.final:
                            return
                resume.failed(_ended_early())
            except grpc.RpcError as error:
                resume.failed(error_from(error))
            except ApiError as error:
                resume.failed(error)
            finally:
                call.cancel()
            await asyncio.sleep(resume.backoff())

    async def wait(self, sweep_id: str) -> orchestrator_pb2.Sweep:
        """The sweep once it has its final state; bound it with asyncio.timeout."""
        async for _ in self.watch(sweep_id):
            pass
        return await self.get(sweep_id)

    async def logs(self, sweep_id: str, index: int) -> orchestrator_pb2.TrialLogs:
        logs: orchestrator_pb2.TrialLogs = await self._call(
            "GetTrialLogs", orchestrator_pb2.GetTrialLogsRequest(sweep_id=sweep_id, index=index)
        )
        return logs

    async def artifacts(self, sweep_id: str, index: int) -> orchestrator_pb2.ListArtifactsResponse:
        found: orchestrator_pb2.ListArtifactsResponse = await self._call(
            "ListArtifacts",
            orchestrator_pb2.ListArtifactsRequest(sweep_id=sweep_id, index=index),
        )
        return found

    async def artifact(self, sweep_id: str, index: int, name: str) -> bytes:
        body = await self._call(
            "GetArtifact",
            orchestrator_pb2.GetArtifactRequest(sweep_id=sweep_id, index=index, name=name),
        )
        return bytes(body.data)

    async def download(
        self, sweep_id: str, index: int, dest: str | os.PathLike[str]
    ) -> builtins.list[Path]:
        """As Client.download (the files are written on a worker thread)."""
        listed = await self.artifacts(sweep_id, index)
        targets = _targets(Path(dest), [a.name for a in listed.artifacts])
        written = []
        for name, target in targets:
            data = await self.artifact(sweep_id, index, name)
            written.append(await asyncio.to_thread(_write, target, data))
        return written


def _targets(root: Path, names: builtins.list[str]) -> builtins.list[tuple[str, Path]]:
    """Each name with its path under root, every one checked before anything is written."""
    return [(name, _inside(root, name)) for name in names]


def _write(target: Path, data: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_whole(target, data)


def _inside(root: Path, name: str) -> Path:
    """Where an artifact of this name goes under root; raises for one that would not stay
    there (absolute, '..', empty parts, NUL, or a symlink out of root)."""
    path = PurePosixPath(name)
    parts = name.split("/")
    if not name or path.is_absolute() or any(p in ("", ".", "..") for p in parts) or "\0" in name:
        raise UnsafeArtifactName(f"artifact name {name[:200]!r} would leave the download folder")
    target = root.joinpath(*parts)
    resolved_root = root.resolve()
    if not target.resolve().is_relative_to(resolved_root):
        raise UnsafeArtifactName(f"artifact name {name[:200]!r} would leave the download folder")
    return target
