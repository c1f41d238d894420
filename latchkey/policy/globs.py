"""The one glob language of tenant rules: a matcher and a SQL predicate from one parse.

Used by ``glob`` conditions, by action globs (``objects:*:delete``), by decisions,
``/v1/authorize/actions``, plans and ``plan.to_sql`` alike, so a pattern means the
same wherever it is read (docs/policy.md "Globs"):

* ``*`` matches any run of characters, the empty run, ``:`` and newlines included;
* ``?`` matches exactly one character (one Unicode code point);
* ``\\`` makes the next character literal; only ``*``, ``?``, ``[``, ``]`` and ``\\``
  may follow it;
* ``[`` and ``]`` are reserved (shells and ``fnmatch`` read them as character
  classes, SQL's LIKE as themselves): write ``\\[`` and ``\\]``;
* every other character, ``%`` and ``_`` included, is itself; case counts;
* a pattern matches the whole value, never a part of it.

A NUL character is refused too: PostgreSQL cannot store it and SQLite's LIKE and
GLOB stop at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Boolean, ColumnElement, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

ESCAPABLE = frozenset("*?[]\\")
LIKE_ESCAPE = "\\"


class GlobError(ValueError):
    """A pattern outside the language; the message says where and what to write instead."""


# One parsed character: a literal, or the wildcard ``*`` / ``?``.
Token = tuple[str, bool]  # (character, is_wildcard)


@dataclass(frozen=True)
class Segment:
    """A fixed-length run between stars: plain text, or with ``?`` a small regex."""

    text: str
    regex: re.Pattern[str] | None
    length: int

    def at(self, value: str, position: int) -> bool:
        if self.regex is None:
            return value.startswith(self.text, position)
        return self.regex.match(value, position) is not None

    def find(self, value: str, start: int, end: int) -> int:
        """The leftmost place in ``value[start:end]`` where the segment lies whole, or -1."""
        if self.regex is None:
            return value.find(self.text, start, end)
        found = self.regex.search(value, start, end)
        return -1 if found is None else found.start()


@dataclass(frozen=True)
class Glob:
    pattern: str
    tokens: tuple[Token, ...]
    segments: tuple[Segment, ...]  # split at the stars (a run of stars is one)

    def matches(self, text: str) -> bool:
        """No backtracking: the first segment must start the value, the last end it,
        and each one between is taken at its leftmost place after the previous one
        (if any placement matches, that one does). Cost: ``str.find`` per plain
        segment; at most the value's length times the segment's for one with ``?``."""
        first, *rest = self.segments
        if not rest:
            return len(text) == first.length and first.at(text, 0)
        *middle, last = rest
        end = len(text) - last.length
        if end < first.length or not first.at(text, 0) or not last.at(text, end):
            return False
        position = first.length
        for segment in middle:
            found = segment.find(text, position, end)
            if found < 0:
                return False
            position = found + segment.length
        return True

    def like(self) -> str:
        """The pattern for ``LIKE … ESCAPE '\\'`` (exact where LIKE is case-sensitive)."""
        out = []
        for char, wild in self.tokens:
            if wild:
                out.append("%" if char == "*" else "_")
            elif char in "%_\\":
                out.append(LIKE_ESCAPE + char)
            else:
                out.append(char)
        return "".join(out)

    def sqlite_glob(self) -> str:
        """The pattern for SQLite's ``GLOB`` (case-sensitive; ``[x]`` quotes a character)."""
        out = []
        for char, wild in self.tokens:
            if wild:
                out.append(char)
            elif char in "*?[":
                out.append(f"[{char}]")
            else:
                out.append(char)
        return "".join(out)


def parse(pattern: str) -> tuple[Token, ...]:
    tokens: list[Token] = []
    chars = iter(enumerate(pattern))
    for position, char in chars:
        if char == "\\":
            following = next(chars, None)
            if following is None or following[1] not in ESCAPABLE:
                raise GlobError(
                    f"a backslash (at {position}) must be followed by *, ?, [, ] or "
                    "another backslash: write \\\\ for a backslash"
                )
            tokens.append((following[1], False))
        elif char in "[]":
            raise GlobError(
                f"{char!r} (at {position}) is reserved: write \\{char} for the character itself"
            )
        elif char == "\0":
            raise GlobError(f"a NUL character (at {position}) is not allowed")
        else:
            tokens.append((char, char in "*?"))
    return tuple(tokens)


def _segments(tokens: tuple[Token, ...]) -> tuple[Segment, ...]:
    runs: list[list[Token]] = [[]]
    for char, wild in tokens:
        if wild and char == "*":
            if runs[-1] or len(runs) == 1:
                runs.append([])
            continue  # a run of stars is one star
        runs[-1].append((char, wild))
    segments = []
    for run in runs:
        if any(wild for _, wild in run):
            regex = "".join("." if wild else re.escape(char) for char, wild in run)
            segments.append(Segment("", re.compile(regex, re.DOTALL), len(run)))
        else:
            segments.append(Segment("".join(char for char, _ in run), None, len(run)))
    return tuple(segments)


@lru_cache(maxsize=8192)
def compile_glob(pattern: str) -> Glob:
    """Parse a pattern once (raises ``GlobError``); the result is cached."""
    tokens = parse(pattern)
    return Glob(pattern, tokens, _segments(tokens))


def check(pattern: str) -> str | None:
    """Why a pattern is not of the language, or None."""
    try:
        compile_glob(pattern)
    except GlobError as exc:
        return str(exc)
    return None


def glob_match(pattern: str, text: str) -> bool:
    """Whether ``text`` matches ``pattern``; ``GlobError`` for a pattern outside the language."""
    return compile_glob(pattern).matches(text)


class GlobPredicate(FunctionElement[bool]):
    """``column`` matches a glob, compiled per database (see ``glob_sql``)."""

    name = "latchkey_glob"
    type = Boolean()
    inherit_cache = True


def glob_sql(column: Any, pattern: str) -> ColumnElement[bool]:
    """A SQL predicate true exactly where ``glob_match(pattern, value)`` is, NULL for NULL.

    SQLite: ``column GLOB pattern`` (its LIKE ignores ASCII case). Other databases:
    ``column LIKE pattern ESCAPE '\\'``, exact where LIKE is case-sensitive, as on
    PostgreSQL. Both translations travel as bound parameters, so cached statements
    stay correct whatever the pattern.
    """
    glob = compile_glob(pattern)
    return GlobPredicate(
        column,
        bindparam("glob_like", glob.like(), unique=True),
        bindparam("glob_sqlite", glob.sqlite_glob(), unique=True),
    )


@compiles(GlobPredicate)
def _compile_like(element: GlobPredicate, compiler: SQLCompiler, **kw: Any) -> str:
    column, like, _ = element.clauses
    return f"({compiler.process(column.like(like, escape=LIKE_ESCAPE), **kw)})"


@compiles(GlobPredicate, "sqlite")
def _compile_sqlite_glob(element: GlobPredicate, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, pattern = element.clauses
    return f"({compiler.process(column.op('GLOB')(pattern), **kw)})"
