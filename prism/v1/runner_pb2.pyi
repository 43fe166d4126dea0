from prism.v1 import trial_pb2 as _trial_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunnerCommand(_message.Message):
    __slots__ = ("run_trial", "cancel_trial")
    RUN_TRIAL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TRIAL_FIELD_NUMBER: _ClassVar[int]
    run_trial: RunTrial
    cancel_trial: CancelTrial
    def __init__(self, run_trial: _Optional[_Union[RunTrial, _Mapping]] = ..., cancel_trial: _Optional[_Union[CancelTrial, _Mapping]] = ...) -> None: ...

class CancelTrial(_message.Message):
    __slots__ = ("trial_id",)
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    def __init__(self, trial_id: _Optional[str] = ...) -> None: ...

class RunTrial(_message.Message):
    __slots__ = ("trial_id", "script", "params_json", "limits", "requirements")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    script: str
    params_json: str
    limits: _trial_pb2.TrialLimits
    requirements: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trial_id: _Optional[str] = ..., script: _Optional[str] = ..., params_json: _Optional[str] = ..., limits: _Optional[_Union[_trial_pb2.TrialLimits, _Mapping]] = ..., requirements: _Optional[_Iterable[str]] = ...) -> None: ...

class RunnerEvent(_message.Message):
    __slots__ = ("accepted", "started", "finished", "metric", "heartbeat", "hello", "returned", "draining")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    accepted: TrialAccepted
    started: TrialStarted
    finished: TrialFinished
    metric: TrialMetric
    heartbeat: Heartbeat
    hello: Hello
    returned: TrialReturned
    draining: Draining
    def __init__(self, accepted: _Optional[_Union[TrialAccepted, _Mapping]] = ..., started: _Optional[_Union[TrialStarted, _Mapping]] = ..., finished: _Optional[_Union[TrialFinished, _Mapping]] = ..., metric: _Optional[_Union[TrialMetric, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., returned: _Optional[_Union[TrialReturned, _Mapping]] = ..., draining: _Optional[_Union[Draining, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol", "runner", "slots", "capabilities")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    RUNNER_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    runner: str
    slots: int
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, protocol: _Optional[int] = ..., runner: _Optional[str] = ..., slots: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrialAccepted(_message.Message):
    __slots__ = ("trial_id", "previous")
    class Previous(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PREVIOUS_UNSPECIFIED: _ClassVar[TrialAccepted.Previous]
        PREVIOUS_NONE: _ClassVar[TrialAccepted.Previous]
        PREVIOUS_RUNNING: _ClassVar[TrialAccepted.Previous]
        PREVIOUS_FINISHED: _ClassVar[TrialAccepted.Previous]
    PREVIOUS_UNSPECIFIED: TrialAccepted.Previous
    PREVIOUS_NONE: TrialAccepted.Previous
    PREVIOUS_RUNNING: TrialAccepted.Previous
    PREVIOUS_FINISHED: TrialAccepted.Previous
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    previous: TrialAccepted.Previous
    def __init__(self, trial_id: _Optional[str] = ..., previous: _Optional[_Union[TrialAccepted.Previous, str]] = ...) -> None: ...

class TrialStarted(_message.Message):
    __slots__ = ("trial_id",)
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    def __init__(self, trial_id: _Optional[str] = ...) -> None: ...

class TrialMetric(_message.Message):
    __slots__ = ("trial_id", "values_json")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_JSON_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    values_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trial_id: _Optional[str] = ..., values_json: _Optional[_Iterable[str]] = ...) -> None: ...

class TrialFinished(_message.Message):
    __slots__ = ("trial_id", "result")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    result: _trial_pb2.TrialResult
    def __init__(self, trial_id: _Optional[str] = ..., result: _Optional[_Union[_trial_pb2.TrialResult, _Mapping]] = ...) -> None: ...

class Draining(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrialReturned(_message.Message):
    __slots__ = ("trial_id", "reason")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    reason: str
    def __init__(self, trial_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
