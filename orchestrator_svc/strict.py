"""JSON request bodies parsed strictly into the API's messages.

Envoy's transcoder drops the JSON fields a message does not have, and has no option to
refuse them (envoy#46623): a typo such as "limit" for "limits" would run the sweep with
the defaults. So the HTTP create reaches the orchestrator as its raw body
(google.api.HttpBody) and is parsed here: a field the message does not have is an
INVALID_ARGUMENT naming it with where it is, as is anything else that is not the
message as JSON (another content type, bytes that are not UTF-8, text that is not JSON
or not an object, a key given twice, NaN, an unpaired surrogate). A field given as null
is left out.

Pure: no I/O, no state.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from typing import Any, TypeVar

from google.api import httpbody_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from prism.errors import InvalidArgument

M = TypeVar("M", bound=Message)

# What a client sends for JSON: the JSON types, or no type at all, or the type curl's
# -d names without being asked (the README's walkthrough posts that way).
JSON_TYPES = ("application/json", "", "application/x-www-form-urlencoded")
# Violations named in one answer, at most; the characters of a key shown, at most.
MAX_NAMED = 20
MAX_KEY_CHARS = 64
# json_format's own errors name the fields they are in, outermost first.
_IN_FIELD = re.compile(r"Failed to parse (\w+) field: ")


def parse(body: httpbody_pb2.HttpBody, message: M) -> M:
    """``body`` as ``message``'s JSON form, into ``message``; INVALID_ARGUMENT naming
    what is wrong (every unknown field at once) when it is not exactly that."""
    media_type = body.content_type.partition(";")[0].strip().lower()
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise InvalidArgument(
            "body", f"must be JSON (Content-Type: application/json), not {media_type[:100]}"
        )
    value = _json(body.data)
    if not isinstance(value, dict):
        raise InvalidArgument("body", f"must be a JSON object, not {_kind(value)}")
    unknown = unknown_fields(value, message.DESCRIPTOR)
    if unknown:
        raise InvalidArgument(*unknown[0], *unknown[1:MAX_NAMED])
    try:
        return json_format.ParseDict(value, message)
    except json_format.ParseError as error:
        raise _parse_error(str(error), message.DESCRIPTOR) from None
    except RecursionError:
        raise InvalidArgument("body", "is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as error:
        # What json_format lets through, e.g. an integer no double holds in a Struct.
        raise InvalidArgument("body", f"cannot be read as the message: {error}"[:300]) from None
    except Exception:  # anything else json_format or upb raises: still the body's fault
        raise InvalidArgument("body", f"cannot be read as a {message.DESCRIPTOR.name}") from None


def _json(data: bytes) -> Any:
    if not data.strip():
        raise InvalidArgument("body", "is empty: it must be a JSON object")
    try:
        value = json.loads(
            data.decode(), object_pairs_hook=_object, parse_constant=_constant, parse_float=_float
        )
        # "\ud800" is JSON, but no UTF-8: protobuf's strings could not hold it.
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeDecodeError:
        raise InvalidArgument("body", "is not UTF-8") from None
    except UnicodeEncodeError as error:
        surrogate = json.dumps(error.object[error.start])[1:-1]
        raise InvalidArgument("body", f"holds an unpaired surrogate ({surrogate})") from None
    except json.JSONDecodeError as error:
        raise InvalidArgument("body", f"is not JSON: {error}") from None
    except RecursionError:
        raise InvalidArgument("body", "is nested too deeply") from None
    except ValueError:  # Python reads no integer of more digits than its limit
        raise InvalidArgument(
            "body", f"holds an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once (else which one counts is a guess)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise InvalidArgument("body", f"names {_shown(key)} twice in one object")
        found[key] = value
    return found


def _constant(name: str) -> Any:
    raise InvalidArgument("body", f"is not JSON: {name} is not a JSON number")


def _float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise InvalidArgument("body", f"holds {text[:40]}, too large for a double")
    return number


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def unknown_fields(
    value: dict[str, Any], descriptor: Descriptor, where: str = ""
) -> list[tuple[str, str]]:
    """(path, rule) for the keys of ``value``, at any depth, that its message does not
    have, or that name a field another key of their object named (``maxParallel`` and
    ``max_parallel``: else the last one counts), up to MAX_NAMED (a hint is CPU work; a
    1 MiB body holds many thousands of keys). Free-form values (google.protobuf's Struct
    and the like) take any key."""
    fields = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    found: list[tuple[str, str]] = []
    given: dict[str, str] = {}  # a field's name: the key that named it
    for key, item in value.items():
        if len(found) >= MAX_NAMED:
            break
        name = key[:MAX_KEY_CHARS] or '""'
        path = f"{where}.{name}" if where else name
        field = fields.get(key)
        if field is None:
            found.append((path, _unknown(key, descriptor)))
            continue
        if field.name in given:
            found.append((path, f"{_shown(given[field.name])} and {_shown(key)} name one field"))
            continue
        given[field.name] = key
        kind = field.message_type
        if kind is None or kind.file.name.startswith("google/protobuf/"):
            continue
        if kind.GetOptions().map_entry:
            continue  # a map's keys are data
        items = enumerate(item) if field.is_repeated and isinstance(item, list) else [(-1, item)]
        for index, each in items:
            if isinstance(each, dict) and len(found) < MAX_NAMED:
                here = path if index < 0 else f"{path}[{index}]"
                found.extend(unknown_fields(each, kind, here))
    return found[:MAX_NAMED]


def _unknown(key: str, descriptor: Descriptor) -> str:
    names = [f.json_name for f in descriptor.fields]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f'did you mean "{close[0]}"?' if close else "the fields here: " + ", ".join(names)
    return f"unknown field {_shown(key)}; {hint}"


def _shown(key: str) -> str:
    return json.dumps(key[:MAX_KEY_CHARS])


def _parse_error(text: str, descriptor: Descriptor) -> InvalidArgument:
    """json_format's error as a violation of the field it names (``limits.memoryMb``).
    Its message leaves a oneof's member out of the chain of fields (``parameters``, then
    ``seed`` of ``random``): the path stops there and the rest stays in the rule."""
    path: list[str] = []
    rest = text
    while (match := _IN_FIELD.match(rest)) and descriptor is not None:
        field = descriptor.fields_by_camelcase_name.get(match[1]) or descriptor.fields_by_name.get(
            match[1]
        )
        if field is None:
            break
        path.append(match[1])
        descriptor = field.message_type
        rest = rest[match.end() :]
    rule = _IN_FIELD.sub(lambda m: f"{m[1]}: ", rest).strip().rstrip(".")
    return InvalidArgument(".".join(path) or "body", rule[:300])
