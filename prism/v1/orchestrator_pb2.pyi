import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetLandingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Landing(_message.Message):
    __slots__ = ("name", "description", "usage")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    usage: Usage
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("start", "poll", "api")
    START_FIELD_NUMBER: _ClassVar[int]
    POLL_FIELD_NUMBER: _ClassVar[int]
    API_FIELD_NUMBER: _ClassVar[int]
    start: str
    poll: str
    api: str
    def __init__(self, start: _Optional[str] = ..., poll: _Optional[str] = ..., api: _Optional[str] = ...) -> None: ...

class RunSweepRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: str
    def __init__(self, task: _Optional[str] = ...) -> None: ...

class RunSweepResponse(_message.Message):
    __slots__ = ("sweep_id", "results")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    results: _containers.RepeatedCompositeFieldContainer[RunnerResult]
    def __init__(self, sweep_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[RunnerResult, _Mapping]]] = ...) -> None: ...

class RunnerResult(_message.Message):
    __slots__ = ("runner", "output", "status")
    RUNNER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    runner: str
    output: str
    status: str
    def __init__(self, runner: _Optional[str] = ..., output: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class GetSweepStatusRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class SweepStatus(_message.Message):
    __slots__ = ("task", "completed", "pending", "status")
    TASK_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    task: str
    completed: _containers.RepeatedCompositeFieldContainer[RunnerResult]
    pending: _containers.RepeatedScalarFieldContainer[str]
    status: str
    def __init__(self, task: _Optional[str] = ..., completed: _Optional[_Iterable[_Union[RunnerResult, _Mapping]]] = ..., pending: _Optional[_Iterable[str]] = ..., status: _Optional[str] = ...) -> None: ...

class SweepSpec(_message.Message):
    __slots__ = ("task", "script", "examples", "parameters", "objective", "max_parallel", "limits", "retries", "requirements", "search", "early_stopping", "max_duration_seconds", "target", "objectives")
    TASK_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    task: str
    script: str
    examples: _containers.RepeatedScalarFieldContainer[str]
    parameters: ParameterSpace
    objective: Objective
    max_parallel: int
    limits: Limits
    retries: int
    requirements: _containers.RepeatedScalarFieldContainer[str]
    search: Search
    early_stopping: EarlyStopping
    max_duration_seconds: float
    target: Target
    objectives: _containers.RepeatedCompositeFieldContainer[Objective]
    def __init__(self, task: _Optional[str] = ..., script: _Optional[str] = ..., examples: _Optional[_Iterable[str]] = ..., parameters: _Optional[_Union[ParameterSpace, _Mapping]] = ..., objective: _Optional[_Union[Objective, _Mapping]] = ..., max_parallel: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., retries: _Optional[int] = ..., requirements: _Optional[_Iterable[str]] = ..., search: _Optional[_Union[Search, _Mapping]] = ..., early_stopping: _Optional[_Union[EarlyStopping, _Mapping]] = ..., max_duration_seconds: _Optional[float] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., objectives: _Optional[_Iterable[_Union[Objective, _Mapping]]] = ...) -> None: ...

class Search(_message.Message):
    __slots__ = ("sampler", "trials", "seed")
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    sampler: str
    trials: int
    seed: int
    def __init__(self, sampler: _Optional[str] = ..., trials: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class EarlyStopping(_message.Message):
    __slots__ = ("rule", "metric", "goal", "step_key", "min_resource", "max_resource", "reduction_factor", "startup_trials", "warmup_steps", "percentile", "interval_steps")
    RULE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    STEP_KEY_FIELD_NUMBER: _ClassVar[int]
    MIN_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    MAX_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    REDUCTION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    STARTUP_TRIALS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    rule: str
    metric: str
    goal: str
    step_key: str
    min_resource: int
    max_resource: int
    reduction_factor: int
    startup_trials: int
    warmup_steps: int
    percentile: float
    interval_steps: int
    def __init__(self, rule: _Optional[str] = ..., metric: _Optional[str] = ..., goal: _Optional[str] = ..., step_key: _Optional[str] = ..., min_resource: _Optional[int] = ..., max_resource: _Optional[int] = ..., reduction_factor: _Optional[int] = ..., startup_trials: _Optional[int] = ..., warmup_steps: _Optional[int] = ..., percentile: _Optional[float] = ..., interval_steps: _Optional[int] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("metric", "value")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    value: float
    def __init__(self, metric: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class ParameterSpace(_message.Message):
    __slots__ = ("grid", "random", "list")
    GRID_FIELD_NUMBER: _ClassVar[int]
    RANDOM_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    grid: _struct_pb2.Struct
    random: RandomSearch
    list: _struct_pb2.ListValue
    def __init__(self, grid: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., random: _Optional[_Union[RandomSearch, _Mapping]] = ..., list: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ...) -> None: ...

class RandomSearch(_message.Message):
    __slots__ = ("trials", "seed", "parameters")
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    trials: int
    seed: int
    parameters: _struct_pb2.Struct
    def __init__(self, trials: _Optional[int] = ..., seed: _Optional[int] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Objective(_message.Message):
    __slots__ = ("metric", "goal")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    metric: str
    goal: str
    def __init__(self, metric: _Optional[str] = ..., goal: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("wall_seconds", "memory_mb", "cpus", "processes", "output_kb", "workspace_mb")
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KB_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_MB_FIELD_NUMBER: _ClassVar[int]
    wall_seconds: float
    memory_mb: int
    cpus: float
    processes: int
    output_kb: int
    workspace_mb: int
    def __init__(self, wall_seconds: _Optional[float] = ..., memory_mb: _Optional[int] = ..., cpus: _Optional[float] = ..., processes: _Optional[int] = ..., output_kb: _Optional[int] = ..., workspace_mb: _Optional[int] = ...) -> None: ...

class CreateSweepRequest(_message.Message):
    __slots__ = ("sweep", "request_id")
    SWEEP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    sweep: SweepSpec
    request_id: str
    def __init__(self, sweep: _Optional[_Union[SweepSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateSweepFromJsonRequest(_message.Message):
    __slots__ = ("body", "request_id")
    BODY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    body: _httpbody_pb2.HttpBody
    request_id: str
    def __init__(self, body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CancelSweepRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class GetSweepRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class ListSweepsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSweepsResponse(_message.Message):
    __slots__ = ("sweeps", "next_page_token")
    SWEEPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sweeps: _containers.RepeatedCompositeFieldContainer[Sweep]
    next_page_token: str
    def __init__(self, sweeps: _Optional[_Iterable[_Union[Sweep, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Sweep(_message.Message):
    __slots__ = ("id", "state", "spec", "create_time", "finish_time", "counts", "trials", "best_trial", "stop_reason", "history", "pareto_front", "next_trials_page_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    BEST_TRIAL_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PARETO_FRONT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TRIALS_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    spec: SweepSpec
    create_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    counts: TrialCounts
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    best_trial: Trial
    stop_reason: str
    history: _containers.RepeatedCompositeFieldContainer[HistoryPoint]
    pareto_front: _containers.RepeatedScalarFieldContainer[int]
    next_trials_page_token: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., spec: _Optional[_Union[SweepSpec, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., counts: _Optional[_Union[TrialCounts, _Mapping]] = ..., trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., best_trial: _Optional[_Union[Trial, _Mapping]] = ..., stop_reason: _Optional[str] = ..., history: _Optional[_Iterable[_Union[HistoryPoint, _Mapping]]] = ..., pareto_front: _Optional[_Iterable[int]] = ..., next_trials_page_token: _Optional[str] = ...) -> None: ...

class HistoryPoint(_message.Message):
    __slots__ = ("trial_index", "value", "best_value")
    TRIAL_INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BEST_VALUE_FIELD_NUMBER: _ClassVar[int]
    trial_index: int
    value: float
    best_value: float
    def __init__(self, trial_index: _Optional[int] = ..., value: _Optional[float] = ..., best_value: _Optional[float] = ...) -> None: ...

class TrialCounts(_message.Message):
    __slots__ = ("total", "pending", "running", "finished", "succeeded", "pruned")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    total: int
    pending: int
    running: int
    finished: int
    succeeded: int
    pruned: int
    def __init__(self, total: _Optional[int] = ..., pending: _Optional[int] = ..., running: _Optional[int] = ..., finished: _Optional[int] = ..., succeeded: _Optional[int] = ..., pruned: _Optional[int] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("index", "name", "params", "state", "outcome", "reason", "metrics", "exit_code", "duration_seconds", "peak_memory_bytes", "attempts", "runner", "artifacts", "abridged", "pruned_step", "pruned_value", "intermediate_values")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RUNNER_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ABRIDGED_FIELD_NUMBER: _ClassVar[int]
    PRUNED_STEP_FIELD_NUMBER: _ClassVar[int]
    PRUNED_VALUE_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_VALUES_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    params: _struct_pb2.Struct
    state: str
    outcome: str
    reason: str
    metrics: _struct_pb2.Struct
    exit_code: int
    duration_seconds: float
    peak_memory_bytes: int
    attempts: int
    runner: str
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactInfo]
    abridged: bool
    pruned_step: int
    pruned_value: float
    intermediate_values: _containers.RepeatedCompositeFieldContainer[IntermediateValue]
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., state: _Optional[str] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., exit_code: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ..., attempts: _Optional[int] = ..., runner: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[ArtifactInfo, _Mapping]]] = ..., abridged: _Optional[bool] = ..., pruned_step: _Optional[int] = ..., pruned_value: _Optional[float] = ..., intermediate_values: _Optional[_Iterable[_Union[IntermediateValue, _Mapping]]] = ...) -> None: ...

class IntermediateValue(_message.Message):
    __slots__ = ("step", "value")
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    step: int
    value: float
    def __init__(self, step: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class GetTrialRequest(_message.Message):
    __slots__ = ("sweep_id", "index")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    index: int
    def __init__(self, sweep_id: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class ListTrialsRequest(_message.Message):
    __slots__ = ("sweep_id", "page_size", "page_token", "state", "outcome", "order_by")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    page_size: int
    page_token: str
    state: str
    outcome: str
    order_by: str
    def __init__(self, sweep_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[str] = ..., outcome: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListTrialsResponse(_message.Message):
    __slots__ = ("trials", "next_page_token", "total_size")
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    next_page_token: str
    total_size: int
    def __init__(self, trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class ArtifactInfo(_message.Message):
    __slots__ = ("name", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class GetTrialLogsRequest(_message.Message):
    __slots__ = ("sweep_id", "index")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    index: int
    def __init__(self, sweep_id: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class TrialLogs(_message.Message):
    __slots__ = ("stdout", "stderr", "truncated")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    stdout: str
    stderr: str
    truncated: bool
    def __init__(self, stdout: _Optional[str] = ..., stderr: _Optional[str] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("sweep_id", "index")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    index: int
    def __init__(self, sweep_id: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("artifacts", "skipped")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactInfo]
    skipped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, artifacts: _Optional[_Iterable[_Union[ArtifactInfo, _Mapping]]] = ..., skipped: _Optional[_Iterable[str]] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("sweep_id", "index", "name")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    index: int
    name: str
    def __init__(self, sweep_id: _Optional[str] = ..., index: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class WatchSweepRequest(_message.Message):
    __slots__ = ("sweep_id", "after_seq")
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    after_seq: int
    def __init__(self, sweep_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class SweepEvent(_message.Message):
    __slots__ = ("seq", "kind", "trial_index", "data", "time", "final", "sweep_state")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TRIAL_INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    SWEEP_STATE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: str
    trial_index: int
    data: _struct_pb2.Struct
    time: _timestamp_pb2.Timestamp
    final: bool
    sweep_state: str
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[str] = ..., trial_index: _Optional[int] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., final: _Optional[bool] = ..., sweep_state: _Optional[str] = ...) -> None: ...
