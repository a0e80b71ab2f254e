"""The write guard: a process-wide write flag and the SQL classifier every statement passes.

Writing is off by default (valarpy's semantics: one flag for the whole process). While it is
off, :func:`check_sql` refuses every statement that is not a read, and the model refuses every
write method before building any SQL (see :mod:`valarfast.metamodel`).

>>> is_write_enabled()
False
>>> is_read_sql("  /* hi */ SELECT 1")
True
>>> is_read_sql("DELETE FROM refs")
False
>>> with writes_enabled():
...     is_write_enabled()
True
>>> is_write_enabled()
False

Thread-safety: the flag is read and written under a lock, so no thread ever sees a torn state,
but it is *process-wide*: enabling it in one thread enables it for all threads until it is
switched off. :func:`writes_enabled` restores the state it found on entry; nesting is fine,
interleaving scoped blocks from several threads is not (the last one to exit wins).

What counts as a read (:func:`is_read_sql`): ``SELECT`` (not ``INTO OUTFILE``/``DUMPFILE``;
``FOR UPDATE`` and ``LOCK IN SHARE MODE`` only take locks and are allowed), ``WITH ... SELECT``,
``SHOW``, ``DESCRIBE``/``DESC``, ``EXPLAIN`` (not ``EXPLAIN ANALYZE``, which executes), and
transaction control (``BEGIN``, ``START TRANSACTION``, ``COMMIT``, ``ROLLBACK [TO]``,
``SAVEPOINT``, ``RELEASE SAVEPOINT``) plus session settings (``SET [SESSION] x = ...``,
``SET NAMES``, ``SET autocommit``, ``SET TRANSACTION``) that drivers send themselves, and
SQLite's query-form ``PRAGMA x`` / ``PRAGMA x("t")`` (not ``PRAGMA x = y``).
Never a read: ``SET GLOBAL``, ``SET PASSWORD``, ``SET ROLE``, ``SET STATEMENT ... FOR``,
``CALL``, ``DO``, ``ANALYZE``, MySQL executable comments (``/*! ... */``), and anything else.
A string with several statements is a read only if every one of them is.
Known limit: a ``SELECT`` calling a stored function that writes cannot be told apart.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from contextlib import ContextDecorator
from typing import Any, TypeVar

from valarfast.errors import WriteNotEnabledError

__all__ = [
    "GuardedDatabaseMixin",
    "check_sql",
    "disable_write",
    "enable_write",
    "is_read_sql",
    "is_write_enabled",
    "require_write",
    "split_statements",
    "writes_enabled",
]

_lock = threading.RLock()
_enabled = False

ENABLE_HINT = (
    "enable writing with model.conn.backend.enable_write(), valarfast.guard.enable_write(), "
    "or a `with valarfast.guard.writes_enabled():` block"
)


def enable_write() -> None:
    """Switch writing on for the whole process."""
    global _enabled
    with _lock:
        _enabled = True


def disable_write() -> None:
    """Switch writing off for the whole process (the default)."""
    global _enabled
    with _lock:
        _enabled = False


def is_write_enabled() -> bool:
    """Whether writing is currently on."""
    with _lock:
        return _enabled


def _set(value: bool) -> bool:
    global _enabled
    with _lock:
        previous = _enabled
        _enabled = value
        return previous


class writes_enabled(ContextDecorator):  # noqa: N801 - reads as a function, like contextlib's
    """Enable writing for one block (or decorated call) and restore the previous state after.

    >>> with writes_enabled():
    ...     assert is_write_enabled()
    >>> is_write_enabled()
    False
    """

    def __init__(self) -> None:
        self._previous: list[bool] = []

    def __enter__(self) -> writes_enabled:
        self._previous.append(_set(True))
        return self

    def __exit__(self, *exc: object) -> None:
        _set(self._previous.pop())


def require_write(what: str) -> None:
    """Raise :class:`WriteNotEnabledError` naming ``what`` unless writing is on."""
    if not is_write_enabled():
        raise WriteNotEnabledError(f"{what} refused: writing is disabled; {ENABLE_HINT}")


# --- SQL classification -------------------------------------------------------------------------

# one lexical token: quoted strings and identifiers, comments, words, single characters
_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<exec_comment>/\*[!M])                      # MySQL/MariaDB executable comment: code
    | (?P<comment>/\*.*?\*/|--(?:[ \t][^\n]*)?(?:\n|$)|\#[^\n]*(?:\n|$))
    | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
    | (?P<ident>`(?:[^`]|``)*`)
    | (?P<word>[A-Za-z_@$][A-Za-z0-9_@$.]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class _Unclassifiable(ValueError):
    """Raised internally for SQL the classifier will not call a read (unterminated, exotic)."""


def _tokens(sql: str) -> list[tuple[str, str]]:
    """Tokens as (kind, text), without whitespace and comments; ``;`` kept as kind 'semi'."""
    out: list[tuple[str, str]] = []
    pos = 0
    n = len(sql)
    while pos < n:
        m = _TOKEN.match(sql, pos)
        if m is None:  # pragma: no cover - the 'other' branch matches any character
            raise _Unclassifiable(sql[pos : pos + 20])
        kind = m.lastgroup or "other"
        text = m.group()
        pos = m.end()
        if kind == "exec_comment":
            raise _Unclassifiable("executable comment")
        if kind in ("ws", "comment"):
            continue
        if kind == "other" and text in "'\"`":
            raise _Unclassifiable("unterminated quote")
        if kind == "other" and text == "/" and sql.startswith("*", pos):
            raise _Unclassifiable("unterminated comment")
        if kind == "other" and text == ";":
            kind = "semi"
        out.append((kind, text))
    return out


def split_statements(sql: str) -> list[list[tuple[str, str]]]:
    """The non-empty statements of ``sql`` as token lists (split at ``;`` outside quotes)."""
    statements: list[list[tuple[str, str]]] = [[]]
    for tok in _tokens(sql):
        if tok[0] == "semi":
            statements.append([])
        else:
            statements[-1].append(tok)
    return [s for s in statements if s]


def _words(tokens: list[tuple[str, str]]) -> list[str]:
    return [text.upper() for kind, text in tokens if kind == "word"]


def _select_is_read(tokens: list[tuple[str, str]]) -> bool:
    words = _words(tokens)
    for i, w in enumerate(words[:-1]):
        if w == "INTO" and words[i + 1] in ("OUTFILE", "DUMPFILE"):
            return False
    return True


def _skip_cte(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """After ``WITH [RECURSIVE] a [(cols)] AS (...), b AS (...)``: the main statement's tokens."""
    i = 1  # at the first CTE's name
    if i < len(tokens) and tokens[i][1].upper() == "RECURSIVE":
        i += 1
    while True:
        i += 1  # past the CTE's name
        if i < len(tokens) and tokens[i][1] == "(":  # column list
            i = _past_parens(tokens, i)
        if i >= len(tokens) or tokens[i][1].upper() != "AS":
            raise _Unclassifiable("malformed WITH")
        i += 1
        if i >= len(tokens) or tokens[i][1] != "(":
            raise _Unclassifiable("malformed WITH")
        i = _past_parens(tokens, i)
        if i < len(tokens) and tokens[i][1] == ",":
            i += 1  # at the next CTE's name
            continue
        return tokens[i:]


def _past_parens(tokens: list[tuple[str, str]], i: int) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j][1] == "(":
            depth += 1
        elif tokens[j][1] == ")":
            depth -= 1
            if depth == 0:
                return j + 1
    raise _Unclassifiable("unbalanced parentheses")


_TRANSACTION_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START"})
# SET forms that change only this session (what drivers and peewee send)
_SET_REFUSED = frozenset({"GLOBAL", "PASSWORD", "ROLE", "DEFAULT", "STATEMENT", "PERSIST"})


def _statement_is_read(tokens: list[tuple[str, str]]) -> bool:
    while tokens and tokens[0][1] == "(":  # (SELECT ...) UNION (SELECT ...)
        tokens = tokens[1:]
    if not tokens or tokens[0][0] != "word":
        return False
    first = tokens[0][1].upper()
    words = _words(tokens)
    if first == "SELECT":
        return _select_is_read(tokens)
    if first == "WITH":
        rest = _skip_cte(tokens)
        while rest and rest[0][1] == "(":
            rest = rest[1:]
        return bool(rest) and rest[0][1].upper() == "SELECT" and _select_is_read(tokens)
    if first in ("SHOW", "DESCRIBE", "DESC", "EXPLAIN"):
        return not (len(words) > 1 and words[1] == "ANALYZE")
    if first in _TRANSACTION_CONTROL:
        if first == "START":
            return len(words) > 1 and words[1] == "TRANSACTION"
        if first == "RELEASE":
            return len(words) > 1 and words[1] == "SAVEPOINT"
        return True
    if first == "PRAGMA":  # SQLite: the query form only (``PRAGMA x = y`` changes settings)
        return not any(text == "=" for _, text in tokens)
    if first == "SET":
        if len(words) < 2:
            return False
        second = words[1]
        if second in _SET_REFUSED or second.startswith("@@GLOBAL."):
            return False
        return not second.startswith(("@@PERSIST", "@@SESSION.PASSWORD"))
    return False


def is_read_sql(sql: str | bytes) -> bool:
    """Whether ``sql`` only reads (or controls a transaction); see the module doc for the rules.

    >>> is_read_sql("WITH x AS (SELECT 1) SELECT * FROM x")
    True
    >>> is_read_sql("SELECT 1; DROP TABLE refs")
    False
    >>> is_read_sql("SELECT * FROM refs INTO OUTFILE '/tmp/x'")
    False
    """
    if isinstance(sql, (bytes, bytearray)):
        sql = bytes(sql).decode("utf-8", errors="replace")
    if not isinstance(sql, str):
        return False
    try:
        statements = split_statements(sql)
        return bool(statements) and all(_statement_is_read(s) for s in statements)
    except _Unclassifiable:
        return False


def check_sql(sql: str | bytes) -> None:
    """Raise :class:`WriteNotEnabledError` if writing is off and ``sql`` is not a read.

    >>> check_sql("SELECT 1")
    >>> check_sql("UPDATE refs SET name = 'x'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    valarfast.errors.WriteNotEnabledError: SQL refused: writing is disabled; ...
    """
    if not is_write_enabled() and not is_read_sql(sql):
        text = sql.decode("utf-8", "replace") if isinstance(sql, (bytes, bytearray)) else str(sql)
        head = " ".join(text.split())[:80]
        raise WriteNotEnabledError(
            f"SQL refused: writing is disabled; {ENABLE_HINT} (statement: {head!r})"
        )


F = TypeVar("F", bound=Callable[..., Any])


class GuardedDatabaseMixin:
    """Put left of a peewee ``Database`` class: every ``execute_sql`` passes :func:`check_sql`.

    >>> import peewee
    >>> class Db(GuardedDatabaseMixin, peewee.SqliteDatabase): pass
    >>> Db(":memory:").execute_sql("DELETE FROM x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    valarfast.errors.WriteNotEnabledError: SQL refused: writing is disabled; ...
    """

    def execute_sql(self, sql: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        check_sql(sql)
        return super().execute_sql(sql, params, *args, **kwargs)  # type: ignore[misc]
