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
Known limits: a ``SELECT`` calling a stored function that writes cannot be told apart; the
driver's own objects (``db.connection()``, ``db.cursor()``) are not wrapped, so code that uses
them directly (valarfast's streaming reads do) must call :func:`check_sql` itself.
"""

from __future__ import annotations

import re
import threading
from contextlib import ContextDecorator
from typing import Any

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


class writes_enabled(ContextDecorator):  # lowercase: reads as a function, like contextlib's
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
#
# One regex pass replaces every string literal, quoted identifier and comment by a placeholder,
# which leaves a "skeleton" where ';', '(' and keywords can be trusted; each statement of the
# skeleton is then judged by its leading keywords. Linear in the length of the SQL.

_LEXEME = re.compile(
    r"""
    (?=[/'"`\#-])                                              # fast skip of plain text
    (?: (?P<exec>/\*[!M])                                         # executable comment: code
    | (?P<comment>/\*.*?\*/|--(?:[ \t\r][^\n]*)?(?=\n|$)|\#[^\n]*)
    | (?P<quoted>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`]|``)*`)
    | (?P<open>['"`]|/\*)                                      # unterminated
    )""",
    re.VERBOSE | re.DOTALL,
)
_WORD = re.compile(r"[A-Za-z_@$][A-Za-z0-9_@$.]*")
_INTO_FILE = re.compile(r"\bINTO\s+(?:OUTFILE|DUMPFILE)\b", re.IGNORECASE)
_CTE_HEAD = re.compile(r"\s*(?:[A-Za-z0-9_$]+|\?)\s*", re.ASCII)


class _Unclassifiable(ValueError):
    """Raised internally for SQL the classifier will not call a read (unterminated, exotic)."""


def _blank(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "exec":
        raise _Unclassifiable("executable comment")
    if kind == "open":
        raise _Unclassifiable("unterminated quote or comment")
    return " " if kind == "comment" else " ? "


def split_statements(sql: str) -> list[str]:
    """The non-empty statements of ``sql``, literals and comments blanked out (``?``, space).

    >>> split_statements("SELECT ';' ; /* x */ DELETE FROM t -- y")
    ['SELECT  ?', 'DELETE FROM t']
    """
    skeleton = _LEXEME.sub(_blank, sql)
    return [part.strip() for part in skeleton.split(";") if part.strip()]


def _past_parens(text: str, i: int) -> int:
    """Index just past the parenthesis group opening at ``text[i]``."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j + 1
    raise _Unclassifiable("unbalanced parentheses")


def _after_ctes(stmt: str) -> str:
    """``WITH [RECURSIVE] a [(cols)] AS (...), b AS (...) rest`` -> ``rest``."""
    m = re.match(r"WITH\s+(?:RECURSIVE\b)?", stmt, re.IGNORECASE)
    if m is None:
        raise _Unclassifiable("malformed WITH")
    i = m.end()
    while True:
        name = _CTE_HEAD.match(stmt, i)
        if name is None or not name.group().strip():
            raise _Unclassifiable("malformed WITH")
        i = name.end()
        if stmt.startswith("(", i):  # column list
            i = _past_parens(stmt, i)
        as_kw = re.compile(r"\s*AS\s*", re.IGNORECASE).match(stmt, i)
        if as_kw is None or not stmt.startswith("(", as_kw.end()):
            raise _Unclassifiable("malformed WITH")
        i = _past_parens(stmt, as_kw.end())
        comma = re.compile(r"\s*,").match(stmt, i)
        if comma is None:
            return stmt[i:].strip()
        i = comma.end()


def _has_into_file(stmt: str) -> bool:
    return "INTO" in stmt.upper() and _INTO_FILE.search(stmt) is not None


def _words(stmt: str, n: int) -> list[str]:
    return [w.upper() for w in _WORD.findall(stmt, 0, 200)[:n]]


_TRANSACTION_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT"})
# SET forms that reach beyond this session
_SET_REFUSED = frozenset({"GLOBAL", "PASSWORD", "ROLE", "DEFAULT", "STATEMENT", "PERSIST"})


def _statement_is_read(stmt: str) -> bool:
    stmt = stmt.lstrip("( \t\r\n")  # (SELECT ...) UNION (SELECT ...)
    if not stmt or not (stmt[0].isalpha() or stmt[0] in "_@$"):
        return False
    words = _words(stmt, 2)
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    if first == "SELECT":
        return not _has_into_file(stmt)
    if first == "WITH":
        rest = _after_ctes(stmt).lstrip("( \t\r\n")
        return _words(rest, 1) == ["SELECT"] and not _has_into_file(stmt)
    if first in ("SHOW", "DESCRIBE", "DESC", "EXPLAIN"):
        return second != "ANALYZE"
    if first in _TRANSACTION_CONTROL:
        return True
    if first == "START":
        return second == "TRANSACTION"
    if first == "RELEASE":
        return second == "SAVEPOINT"
    if first == "PRAGMA":  # SQLite: the query form only (``PRAGMA x = y`` changes settings)
        return "=" not in stmt
    if first == "SET":
        return bool(second) and second not in _SET_REFUSED and not second.startswith(
            ("@@GLOBAL.", "@@PERSIST")
        )
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
