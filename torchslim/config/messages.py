"""Where config problems are reported: key paths, the file and line each key came from, one-line errors.

Every problem becomes one :class:`~torchslim.errors.ConfigError` whose message is a single line
``<file>: <key.path>: <problem>``, with ``(line N)`` when the key's line is known.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from torchslim.errors import ConfigError

KeyPath = tuple[Any, ...]
"""A location inside the config: mapping keys (str) and list indexes (int)."""

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-*/:+]+")
_MAX_REPR = 60


# ----------------------------------------------------------------------------- messages


def dotted(path: Iterable[Any]) -> str:
    """``("strategies", "s1", "target_ratio")`` -> ``strategies.s1.target_ratio``.

    List indexes render as ``[i]``; keys that are not plain words render as ``['a b']``
    so that the message stays on one line and unambiguous.
    """
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{short_repr(part)}]"
    return out


def short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not replace the real error
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def got(value: Any) -> str:
    return f"got {short_repr(value)} ({type_name(value)})"


def suggest(name: Any, candidates: Iterable[str]) -> str | None:
    """The closest candidate to ``name`` (case-insensitive), or None."""
    if not isinstance(name, str):
        return None
    by_lower = {c.lower(): c for c in candidates}
    lowered = name.lower()[:200]
    close = difflib.get_close_matches(lowered, list(by_lower), n=1, cutoff=0.6)
    if not close and len(lowered) >= 2:  # the shortest completion: 'l1' -> 'l1_norm'
        close = sorted((c for c in by_lower if c.startswith(lowered)), key=len)[:1]
    return by_lower[close[0]] if close else None


def did_you_mean(name: Any, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    close = suggest(name, candidates)
    return f"; did you mean {close!r}?" if close else ""


def make_error(source: str, path: KeyPath, problem: str, line: int | None = None) -> ConfigError:
    """Build the one-line ConfigError; the parts are also kept as attributes."""
    where = dotted(path)
    message = f"{source}: {where}: {problem}" if where else f"{source}: {problem}"
    if line is not None:
        message += f" (line {line})"
    message = message.replace("\n", " ").replace("\r", " ")
    error = ConfigError(message)
    error.source = source
    error.key_path = where
    error.problem = problem
    error.line = line
    return error


# ----------------------------------------------------------------------------- origins


class Origins:
    """Which file (and line) each key path came from, so errors name the right file.

    Lookups fall back to the longest recorded prefix of the path, then to ``default``.
    """

    def __init__(self, default: str, where: dict[KeyPath, tuple[str, int | None]] | None = None):
        self.default = default
        self.where: dict[KeyPath, tuple[str, int | None]] = dict(where or {})

    def locate(self, path: KeyPath) -> tuple[str, int | None]:
        for n in range(len(path), -1, -1):
            hit = self.where.get(tuple(path[:n]))
            if hit is not None:
                return hit
        return self.default, None

    def forget_below(self, path: KeyPath) -> None:
        """Drop the records at and under ``path`` (its value was replaced wholesale)."""
        n = len(path)
        for key in [k for k in self.where if k[:n] == path]:
            del self.where[key]

    def update(self, other: Origins) -> None:
        self.where.update(other.where)

    def copy(self) -> Origins:
        return Origins(self.default, self.where)


class Context:
    """Where errors are reported while one config is being validated."""

    def __init__(self, origins: Origins):
        self.origins = origins

    def error(self, path: KeyPath, problem: str) -> ConfigError:
        source, line = self.origins.locate(tuple(path))
        return make_error(source, tuple(path), problem, line)


def config_context(config: Any) -> Context:
    """The Context of a loaded config (it knows each key's file and line), for problems found later."""
    return Context(getattr(config, "_origins", None) or Origins(config.source))
