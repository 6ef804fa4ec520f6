"""Value converters, checks and the field spec that turn raw YAML values into config dataclasses."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torchslim.config.messages import Context, KeyPath, did_you_mean, got, short_repr
from torchslim.errors import ConfigError

Converter = Callable[[Context, KeyPath, Any], Any]
Check = Callable[[Any], "str | None"]

_MAX_RAW_NODES = 100_000


# ----------------------------------------------------------------------------- converters
# A converter takes (ctx, path, value), returns the checked value or raises ctx.error(...).


def as_int(ctx: Context, path: KeyPath, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(path, f"expected an integer, {got(value)}")
    return int(value)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def as_float(ctx: Context, path: KeyPath, value: Any) -> float:
    """A finite number. Numeric strings such as ``'1e-4'`` are accepted: PyYAML reads
    ``1e-4`` (no dot) as a string, a classic trap in learning-rate settings."""
    if isinstance(value, bool):
        raise ctx.error(path, f"expected a number, {got(value)}")
    if isinstance(value, int):
        try:
            number = float(value)
        except OverflowError:
            raise ctx.error(path, f"number is too large, {got(value)}") from None
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        raise ctx.error(path, f"expected a number, {got(value)}")
    if not math.isfinite(number):
        raise ctx.error(path, f"expected a finite number, {got(value)}")
    return number


def as_bool(ctx: Context, path: KeyPath, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(path, f"expected true or false, {got(value)}")
    return value


def as_str(ctx: Context, path: KeyPath, value: Any) -> str:
    if not isinstance(value, str):
        raise ctx.error(path, f"expected a string, {got(value)}")
    if not value.strip():
        raise ctx.error(path, "must not be empty")
    return value


def as_path_or_none(ctx: Context, path: KeyPath, value: Any) -> str | None:
    """A file-system path; null or an empty string mean "none" (the seed's way to disable)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ctx.error(path, f"expected a path string or null, {got(value)}")
    return value


def as_regex(ctx: Context, path: KeyPath, value: Any) -> str:
    text = as_str(ctx, path, value)
    try:
        re.compile(text)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise ctx.error(path, f"invalid regular expression {short_repr(text)}: {exc}") from None
    return text


def optional(conv: Converter) -> Converter:
    def convert(ctx: Context, path: KeyPath, value: Any) -> Any:
        return None if value is None else conv(ctx, path, value)

    convert.__name__ = f"optional_{getattr(conv, '__name__', 'value')}"
    return convert


def list_of(conv: Converter, *, allow_scalar: bool = False) -> Converter:
    """A list whose items pass ``conv``; with ``allow_scalar`` a single item becomes a list."""

    def convert(ctx: Context, path: KeyPath, value: Any) -> list:
        if allow_scalar and not isinstance(value, list | tuple):
            return [conv(ctx, path, value)]
        if not isinstance(value, list | tuple):
            raise ctx.error(path, f"expected a list, {got(value)}")
        return [conv(ctx, (*path, i), item) for i, item in enumerate(value)]

    return convert


def mapping_of(key_check: Converter | None, conv: Converter) -> Converter:
    def convert(ctx: Context, path: KeyPath, value: Any) -> dict:
        mapping = require_mapping(ctx, path, value)
        out = {}
        for key, item in mapping.items():
            if key_check is not None:
                key_check(ctx, (*path, key), key)
            out[key] = conv(ctx, (*path, key), item)
        return out

    return convert


def choice(options: Iterable[str], what: str = "value") -> Converter:
    options = tuple(options)

    def convert(ctx: Context, path: KeyPath, value: Any) -> str:
        if not isinstance(value, str):
            raise ctx.error(path, f"expected a string, {got(value)}")
        if value not in options:
            raise ctx.error(
                path,
                f"unknown {what} {short_repr(value)}{did_you_mean(value, options)} "
                f"(choose from: {', '.join(options)})",
            )
        return value

    return convert


def require_mapping(ctx: Context, path: KeyPath, value: Any, *, allow_null: bool = False) -> dict:
    """``value`` as a dict with string keys (null -> {} when ``allow_null``)."""
    if value is None and allow_null:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.error(path, f"expected a mapping, {got(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ctx.error(path, f"keys must be strings, {got(key)}")
    return dict(value)


def plain(ctx: Context, path: KeyPath, value: Any) -> Any:
    """A deep copy of a JSON-able value (str, int, float, bool, null, list, str-keyed mapping).

    Used for sections kept raw; recursive YAML aliases and huge alias expansions are errors.
    """
    budget = [_MAX_RAW_NODES]

    def copy(item: Any, where: KeyPath, stack: frozenset) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ctx.error(path, "value is too large")
        if item is None or isinstance(item, bool | int | str):
            return item
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ctx.error(where, f"expected a finite number, {got(item)}")
            return item
        if id(item) in stack:
            raise ctx.error(where, "a value may not contain itself (recursive YAML alias)")
        inner = stack | {id(item)}
        if isinstance(item, Mapping):
            out = {}
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ctx.error(where, f"keys must be strings, {got(key)}")
                out[key] = copy(sub, (*where, key), inner)
            return out
        if isinstance(item, list | tuple):
            return [copy(sub, (*where, i), inner) for i, sub in enumerate(item)]
        raise ctx.error(
            where, f"unsupported value {got(item)}; use strings, numbers, booleans, lists or mappings"
        )

    try:
        return copy(value, tuple(path), frozenset())
    except RecursionError:
        raise ctx.error(path, "value is nested too deeply") from None


# ----------------------------------------------------------------------------- checks
# A check takes the converted value and returns a problem string, or None when fine.


def interval(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Check:
    def fmt(x: float) -> str:
        return f"{x:g}"

    if lo is not None and hi is not None:
        text = f"in {'(' if lo_open else '['}{fmt(lo)}, {fmt(hi)}{')' if hi_open else ']'}"
        if lo_open and hi_open:
            text += " (both ends excluded)"
    elif lo is not None:
        text = f"{'>' if lo_open else '>='} {fmt(lo)}"
    elif hi is not None:
        text = f"{'<' if hi_open else '<='} {fmt(hi)}"
    else:  # pragma: no cover - a programming error
        raise ValueError("interval() needs a bound")

    def check(value: Any) -> str | None:
        if value is None:
            return None
        bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
            hi is not None and (value >= hi if hi_open else value > hi)
        )
        return f"must be {text}, got {short_repr(value)}" if bad else None

    return check


def each(check: Check) -> Check:
    def check_all(values: Any) -> str | None:
        for i, value in enumerate(values or ()):
            problem = check(value)
            if problem:
                return f"item [{i}] {problem}"
        return None

    return check_all


RATIO_OPEN = interval(0.0, 1.0, lo_open=True, hi_open=True)
FRACTION = interval(0.0, 1.0, lo_open=True)
NON_NEGATIVE = interval(0)
POSITIVE_INT = interval(1)


def non_empty(what: str) -> Check:
    def check(value: Any) -> str | None:
        return f"must name at least one {what}" if not value else None

    return check


# ----------------------------------------------------------------------------- fields


def spec(
    conv: Converter,
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    check: Check | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field that is also a config key (its name is the YAML key)."""
    metadata = {"conv": conv, "check": check, "doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def key_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are config keys, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "conv" in f.metadata]


def unknown_key_error(
    ctx: Context, path: KeyPath, key: str, allowed: Iterable[str], hints: Mapping[str, str]
) -> ConfigError:
    allowed = list(allowed)
    if key in hints:
        return ctx.error((*path, key), f"unknown key: {hints[key]}")
    return ctx.error(
        (*path, key),
        f"unknown key{did_you_mean(key, allowed)} (allowed here: {', '.join(allowed)})",
    )


def build(
    cls: type, ctx: Context, path: KeyPath, mapping: Any, *, ignore: tuple[str, ...] = (), **extra: Any
) -> Any:
    """Validate ``mapping`` against the key fields of dataclass ``cls`` and instantiate it.

    ``ignore`` lists keys handled by the caller (``class``); ``extra`` are non-key
    constructor arguments (the instance ``name``). After construction the object's
    ``validate(ctx, path)`` hook runs the checks that involve several keys.
    """
    mapping = require_mapping(ctx, path, mapping, allow_null=True)
    fields = key_fields(cls)
    names = [f.name for f in fields]
    hints = getattr(cls, "key_hints", {})
    for key in mapping:
        if key not in names and key not in ignore:
            raise unknown_key_error(ctx, path, key, [*ignore, *names], hints)
    kwargs: dict[str, Any] = {}
    for f in fields:
        where = (*path, f.name)
        if f.name not in mapping:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ctx.error(where, "required key is missing")
            continue
        value = f.metadata["conv"](ctx, where, mapping[f.name])
        check = f.metadata["check"]
        problem = check(value) if check is not None else None
        if problem:
            raise ctx.error(where, problem)
        kwargs[f.name] = value
    obj = cls(**kwargs, **extra)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(ctx, path)
    return obj


def to_plain(value: Any) -> Any:
    """Config dataclasses -> plain dicts (``class`` key first, key fields in order)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        class_name = getattr(value, "class_name", None)
        if class_name:
            out["class"] = class_name
        for f in key_fields(type(value)):
            out[f.name] = to_plain(getattr(value, f.name))
        return out
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    return value
