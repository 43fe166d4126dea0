from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_SUCCEEDED: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]
    OUTCOME_TIMED_OUT: _ClassVar[Outcome]
    OUTCOME_OOM_KILLED: _ClassVar[Outcome]
    OUTCOME_OUTPUT_LIMIT: _ClassVar[Outcome]
    OUTCOME_CANCELLED: _ClassVar[Outcome]
    OUTCOME_SANDBOX_ERROR: _ClassVar[Outcome]
    OUTCOME_RUNNER_LOST: _ClassVar[Outcome]
    OUTCOME_PRUNED: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_SUCCEEDED: Outcome
OUTCOME_FAILED: Outcome
OUTCOME_TIMED_OUT: Outcome
OUTCOME_OOM_KILLED: Outcome
OUTCOME_OUTPUT_LIMIT: Outcome
OUTCOME_CANCELLED: Outcome
OUTCOME_SANDBOX_ERROR: Outcome
OUTCOME_RUNNER_LOST: Outcome
OUTCOME_PRUNED: Outcome

class TrialLimits(_message.Message):
    __slots__ = ("wall_seconds", "memory_bytes", "cpus", "processes", "output_bytes", "workspace_bytes")
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_BYTES_FIELD_NUMBER: _ClassVar[int]
    wall_seconds: float
    memory_bytes: int
    cpus: float
    processes: int
    output_bytes: int
    workspace_bytes: int
    def __init__(self, wall_seconds: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., cpus: _Optional[float] = ..., processes: _Optional[int] = ..., output_bytes: _Optional[int] = ..., workspace_bytes: _Optional[int] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class TrialResult(_message.Message):
    __slots__ = ("outcome", "reason", "exit_code", "stdout", "stderr", "output_truncated", "duration_seconds", "result_json", "peak_memory_bytes", "artifacts", "artifacts_skipped")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    reason: str
    exit_code: int
    stdout: str
    stderr: str
    output_truncated: bool
    duration_seconds: float
    result_json: str
    peak_memory_bytes: int
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    artifacts_skipped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, outcome: _Optional[_Union[Outcome, str]] = ..., reason: _Optional[str] = ..., exit_code: _Optional[int] = ..., stdout: _Optional[str] = ..., stderr: _Optional[str] = ..., output_truncated: _Optional[bool] = ..., duration_seconds: _Optional[float] = ..., result_json: _Optional[str] = ..., peak_memory_bytes: _Optional[int] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., artifacts_skipped: _Optional[_Iterable[str]] = ...) -> None: ...
