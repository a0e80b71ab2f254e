"""Streamed rows on real MariaDB: the zero-copy reader gives PyMySQL's values, large binary ones
as memoryviews into the received packet (every length encoding, NULLs, text, multi-packet rows)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

import valarfast
from valarfast import streaming

pytestmark = pytest.mark.mariadb

# the length prefix changes at 251 (2 bytes), 65536 (3 bytes) and 16777216 (8 bytes); a row
# packet of 16 MiB - 1 bytes or more is split by the server (PyMySQL joins the parts)
LENGTHS = [0, 1, 250, 251, 252, 4095, 4096, 65535, 65536, 65537, 16_777_215 - 64, 16_777_216]


@pytest.fixture(scope="module")
def model(valar_db: dict[str, Any]) -> Iterator[Any]:
    with valarfast.opened(valar_db) as m:
        yield m


def _select(n: int) -> tuple[str, list[Any]]:
    """A row of many kinds of values around a binary value of n bytes (REPEAT of a byte)."""
    sql = (
        "SELECT 7 AS i, REPEAT(_binary %s, %s) AS blob_value, NULL AS nothing, "
        "_utf8mb4 'zébrafish ✓' AS text_value, 2.5 AS dec_value, "
        "CAST('2021-06-01 12:30:00' AS DATETIME) AS when_value, _binary %s AS short_binary"
    )
    return sql, [b"\xab", n, b"\x00\x01"]


def _plain(valar_db: dict[str, Any], sql: str, params: list[Any]) -> tuple[Any, ...]:
    """What PyMySQL itself returns (a buffered cursor on a connection of its own)."""
    settings = {k: valar_db[k] for k in ("host", "port", "user", "password", "database")}
    conn = pymysql.connect(charset="utf8mb4", **settings)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
            assert row is not None
            return tuple(row)
    finally:
        conn.close()


@pytest.mark.parametrize("n", LENGTHS)
def test_zero_copy_rows_equal_pymysql_rows(model: Any, valar_db: dict[str, Any], n: int) -> None:
    db = model.conn.database
    sql, params = _select(n)
    expected = _plain(valar_db, sql, params)
    assert expected[1] is not None and len(expected[1]) == n  # the server built the value
    (copied,) = list(streaming.stream_rows(db, sql, params))
    assert copied == expected
    for row in streaming.stream_rows(db, sql, params, zero_copy=True):
        blob = row[1]
        if n >= streaming.ZERO_COPY_BYTES:
            assert isinstance(blob, memoryview) and blob.readonly and blob.nbytes == n
        else:
            assert isinstance(blob, bytes)
        assert bytes(blob) == expected[1]
        assert isinstance(row[6], bytes)  # short binary values stay bytes
        assert (row[0], *row[2:]) == (expected[0], *expected[2:])


def test_zero_copy_many_rows_and_early_close(model: Any) -> None:
    db = model.conn.database
    sql = (
        "SELECT seq, REPEAT(CHAR(MOD(seq, 256) USING binary), 5000 + seq) FROM seq_0_to_199 "
        "ORDER BY seq"
    )
    rows = [(i, bytes(b)) for i, b in streaming.stream_rows(db, sql, zero_copy=True)]
    assert rows == [(i, bytes([i % 256]) * (5000 + i)) for i in range(200)]
    stream = streaming.stream_rows(db, sql, zero_copy=True)
    first = next(stream)
    assert first[0] == 0 and isinstance(first[1], memoryview)
    stream.close()  # drains the rest: the connection is usable at once
    assert streaming.query_all(db, "SELECT 41 + 1") == [(42,)]


@pytest.mark.parametrize(
    ("packet", "problem"),
    [
        (b"\xff\x00", "length prefix 0xff"),
        (b"\x05abc", "past its"),
        (b"\xfc\x10", "past its"),
        (b"\xfe\x00\x00\x00\x00\x00\x00\x01\x00", "past its"),
    ],
)
def test_malformed_packets_are_refused(packet: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        streaming.row_of_packet(packet, [(None, None)], min_view=1)


def test_row_of_packet_length_encodings() -> None:
    columns = [(None, None)] * 4 + [("ascii", int)]
    values = [b"", b"x" * 251, b"y" * 70_000, None]
    packet = (
        b"\x00"
        + b"\xfc" + (251).to_bytes(2, "little") + values[1]
        + b"\xfd" + (70_000).to_bytes(3, "little") + values[2]
        + b"\xfb"
        + b"\x0212"
    )  # fmt: skip
    row = streaming.row_of_packet(packet, columns, min_view=300)
    assert row[0] == b"" and isinstance(row[0], bytes)
    assert row[1] == values[1] and isinstance(row[1], bytes)  # below min_view: a copy
    assert isinstance(row[2], memoryview) and bytes(row[2]) == values[2]
    assert row[3] is None and row[4] == 12
    # fewer values than columns: stop there, as PyMySQL does
    assert streaming.row_of_packet(b"\x01a", [(None, None)] * 3, min_view=1)[0] == b"a"


def test_zero_copy_stream_lost_midway_is_raised_not_retried(model: Any) -> None:
    """KILL the connection after the first of 400 rows of 1 MB: ConnectionLostError, no retry,
    and the next statement gets a new connection."""
    import dbtools

    from valarfast.errors import ConnectionLostError

    db = model.conn.database
    thread = db.connection().thread_id()
    sql = "SELECT seq, REPEAT(_binary 'z', 1000000) FROM seq_0_to_399"
    stream = streaming.stream_rows(db, sql, zero_copy=True)
    assert next(stream)[0] == 0
    dbtools.kill_connection(thread)
    with pytest.raises(ConnectionLostError, match="middle of a streamed result"):
        for _ in stream:
            pass
    assert streaming.query_all(db, "SELECT CONNECTION_ID()")[0][0] != thread
