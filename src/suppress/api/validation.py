"""Schema violations in words: each error names the field as the API spells it, where it was
(`body`, `query`, `path`, `header`), and the rule it breaks — the allowed values of an enum, the
bounds of a number or a length, a pattern's rule as its type describes it.

Litestar reports a violation with msgspec's message and the Python name of the parameter (`fmt` for
`format`); a missing query parameter only in the exception's detail. The handler's signature gives
back the API's names and the types, whose msgspec description gives the rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import msgspec.inspect as mi
from litestar import Request
from litestar.exceptions import ValidationException

FieldError = dict[str, str | None]

_TYPE_WORDS: Final = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "number": "a number",
    "bool": "true or false",
    "object": "a JSON object",
    "array": "an array",
    "null": "null",
    "datetime": "a date and time with a time zone (RFC 3339, e.g. 2026-05-01T12:00:00Z)",
    "date": "a date (YYYY-MM-DD)",
    "bytes": "base64 text",
}
_MISSING_PARAMETER: Final = re.compile(r"Missing required (\w+) parameter '([^']+)'")
_SEGMENT: Final = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def field_errors(request: Request[Any, Any, Any], exc: ValidationException) -> list[FieldError]:
    """The violations of `exc` in words, one per field."""
    handler = request.scope.get("route_handler")
    parameters = handler.parsed_fn_signature.parameters if handler is not None else {}
    missing = _MISSING_PARAMETER.search(str(exc.detail))
    if missing:
        source, name = missing.groups()
        python_name = next((p for p, f in parameters.items() if _api_name(p, f) == name), name)
        leaf = _type_of(parameters.get(python_name), [])
        allowed = _allowed(leaf)
        return [
            {
                "field": name,
                "source": source,
                "message": "is required" + (f"; one of: {', '.join(allowed)}" if allowed else ""),
            }
        ]
    errors = [e for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
    return [_explain(error, parameters) for error in errors]


def _explain(error: dict[str, Any], parameters: dict[str, Any]) -> FieldError:
    source = error.get("source")
    key = str(error.get("key") or "")
    message = str(error.get("message") or "")
    if source == "body":
        root = parameters.get("data")
        path = [] if key == "data" else _segments(key)
    else:
        root = parameters.get(key)
        path = []
        key = _api_name(key, root) if root is not None else key
    field: str | None = None if source == "body" and key == "data" else key
    node = _type_of(root, path)
    named = re.match(r"Object (missing required|contains unknown) field `([^`]+)`", message)
    if named:
        inner = named.group(2)
        field = f"{field}.{inner}" if field else inner
        if named.group(1) == "missing required":
            return {"field": field, "source": source, "message": "is required"}
        known = _field_names(node)
        suffix = f"; known fields: {', '.join(known)}" if known else ""
        return {"field": field, "source": source, "message": f"is not a field of this request{suffix}"}
    if field is None and message.startswith("Expected `object`"):
        return {"field": None, "source": source, "message": "the body must be a JSON object"}
    return {"field": field, "source": source, "message": _in_words(message, node)}


def _in_words(message: str, node: Any) -> str:
    """msgspec's message about one value, in words and with the rule it breaks."""
    if message.startswith("Invalid enum value"):
        allowed = _allowed(node)
        got = message.removeprefix("Invalid enum value").strip()
        if allowed:
            return f"must be one of: {', '.join(allowed)} (got {got})"
        return f"is not an allowed value (got {got})"
    if pattern := re.match(r"Expected `str` matching regex '(.*)'$", message):
        rule = _description(node)
        return f"must be {rule}" if rule else f"must match the pattern {pattern.group(1)}"
    if length := re.match(r"Expected `(\w+)` of length ([<>]=?) (\d+)$", message):
        kind, op, n = length.groups()
        unit = "character" if kind == "str" else "item"
        words = f"{n} {unit}" + ("" if n == "1" else "s")
        least = op.startswith(">")
        if kind == "str":
            return f"must be at {'least' if least else 'most'} {words} long"
        return f"must have at {'least' if least else 'most'} {words}"
    if bound := re.match(r"Expected `(?:int|float|number)` ([<>]=?) (-?[\d.e+]+)$", message):
        op, n = bound.groups()
        words = {">=": "at least", "<=": "at most", ">": "greater than", "<": "less than"}[op]
        return f"must be {words} {n}"
    if wrong := re.match(r"Expected `([^`]+)`, got `([^`]+)`$", message):
        expected, got = wrong.groups()
        allowed = _allowed(node)
        if allowed:
            return f"must be one of: {', '.join(allowed)} (got {_type_words(got)})"
        return f"must be {_type_words(expected)}, not {_type_words(got)}"
    if message.startswith("Invalid RFC3339 encoded datetime"):
        return f"must be {_TYPE_WORDS['datetime']}"
    if message == "Expected `datetime` with a timezone component":
        return "must carry a time zone (Z or an offset such as +01:00)"
    return message


def _type_words(names: str) -> str:
    return " or ".join(_TYPE_WORDS.get(name.strip(), name.strip()) for name in names.split("|"))


def _api_name(python_name: str, field: Any) -> str:
    """The parameter's name in the API (`format` for the handler's `fmt`)."""
    kwarg = getattr(field, "kwarg_definition", None)
    for attribute in ("name", "query", "header", "cookie"):  # QueryParameter(name=...), Parameter(query=...)
        alias = getattr(kwarg, attribute, None)
        if isinstance(alias, str) and alias:
            return alias
    return python_name


def _segments(key: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _SEGMENT.findall(key)]


def _type_of(field: Any, path: Sequence[str | int]) -> Any:
    """The msgspec type at `path` inside a handler parameter's annotation, or None."""
    if field is None:
        return None
    try:
        node: Any = mi.type_info(field.annotation)
    except Exception:  # a type msgspec cannot describe: the message stays as msgspec put it
        return None
    for segment in path:
        node = _step(_unwrap(node), segment)
        if node is None:
            return None
    return node


def _unwrap(node: Any) -> Any:
    while True:
        if isinstance(node, mi.Metadata):
            node = node.type
        elif isinstance(node, mi.UnionType):
            options = [t for t in node.types if not isinstance(t, mi.NoneType)]
            if len(options) != 1:
                return node
            node = options[0]
        else:
            return node


def _step(node: Any, segment: str | int) -> Any:
    if isinstance(segment, int):
        if isinstance(node, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
            return node.item_type
        return None
    structs = node.types if isinstance(node, mi.UnionType) else (node,)
    for struct in structs:
        if isinstance(struct, mi.StructType):
            for field in struct.fields:
                if field.encode_name == segment:
                    return field.type
        if isinstance(struct, mi.DictType):
            return struct.value_type
    return None


def _allowed(node: Any) -> list[str]:
    node = _unwrap(node)
    if isinstance(node, mi.LiteralType):
        return [str(v) for v in node.values]
    if isinstance(node, mi.EnumType):
        return [str(member.value) for member in node.cls]
    return []


def _description(node: Any) -> str | None:
    """The rule a constrained type states in its msgspec `description`."""
    while True:
        if isinstance(node, mi.Metadata):
            described = (node.extra_json_schema or {}).get("description")
            if described:
                return str(described)
            node = node.type
        elif isinstance(node, mi.UnionType):
            options = [t for t in node.types if not isinstance(t, mi.NoneType)]
            if len(options) != 1:
                return None
            node = options[0]
        else:
            return None


def _field_names(node: Any) -> list[str]:
    node = _unwrap(node)
    if isinstance(node, mi.StructType):
        return [field.encode_name for field in node.fields]
    return []
