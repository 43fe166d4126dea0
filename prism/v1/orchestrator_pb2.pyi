from google.api import annotations_pb2 as _annotations_pb2
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
