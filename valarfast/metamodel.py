"""The base of Valar's model: the database proxy, exact MySQL field types, and BaseModel.

Every model class binds to :data:`database_proxy`, so ``valarfast.model`` can be imported before
any connection exists; a query with no open connection raises
:class:`~valarfast.errors.NotConnectedError`.

>>> from valarfast import model
>>> model.Refs.select().count()                     # doctest: +SKIP
Traceback (most recent call last):
...
valarfast.errors.NotConnectedError: no open connection: open one with valarfast.opened() or ...

Field classes carry the exact MySQL type in ``field_type`` (so ``create_table()`` on MySQL makes
the same columns); :data:`SQLITE_AFFINITY` maps each of those strings to a SQLite type.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

import peewee

from valarfast import guard
from valarfast.errors import (
    NotConnectedError,
    UnsupportedOperationError,
    ValarLookupError,
    ValarTableTypeError,
    WriteNotEnabledError,
)

__all__ = [
    "NOT_CONNECTED_MESSAGE",
    "SQLITE_AFFINITY",
    "BaseModel",
    "BinaryField",
    "DoubleField",
    "EnumField",
    "FixedCharField",
    "ForeignKeyField",
    "LongBlobField",
    "MediumBlobField",
    "MediumIntegerField",
    "MediumTextField",
    "NotConnectedError",
    "TableDescriptionFrame",
    "TimestampDateTimeField",
    "TinyIntegerField",
    "UnsignedBigAutoField",
    "UnsignedBigIntegerField",
    "UnsignedDoubleField",
    "UnsignedIntegerAutoField",
    "UnsignedIntegerField",
    "UnsignedMediumAutoField",
    "UnsignedMediumIntegerField",
    "UnsignedSmallAutoField",
    "UnsignedSmallIntegerField",
    "UnsignedTinyAutoField",
    "UnsignedTinyIntegerField",
    "UnsupportedOperationError",
    "ValarLookupError",
    "ValarTableTypeError",
    "VarBinaryField",
    "WriteNotEnabledError",
    "database_proxy",
]

NOT_CONNECTED_MESSAGE = (
    "no open connection: open one with valarfast.opened() or Valar(config).open()"
)


# --- the proxy ----------------------------------------------------------------------------------


class ValarDatabaseProxy(peewee.DatabaseProxy):
    """A peewee ``DatabaseProxy`` that says how to connect when it is used uninitialized."""

    __slots__ = ()

    def __setattr__(self, attr: str, value: Any) -> None:
        # peewee's Proxy checks type(self).__slots__, which is empty here
        if attr not in peewee.DatabaseProxy.__slots__:
            raise AttributeError(f"cannot set {attr!r} on the database proxy")
        object.__setattr__(self, attr, value)

    def __getattr__(self, attr: str) -> Any:
        if self.obj is None:
            if attr.startswith("__") or attr in peewee.DatabaseProxy.__slots__:
                raise AttributeError(attr)  # hasattr() and copy keep working
            raise NotConnectedError(NOT_CONNECTED_MESSAGE)
        return getattr(self.obj, attr)

    def __enter__(self) -> Any:
        if self.obj is None:
            raise NotConnectedError(NOT_CONNECTED_MESSAGE)
        return self.obj.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        if self.obj is None:
            raise NotConnectedError(NOT_CONNECTED_MESSAGE)
        return self.obj.__exit__(*exc)

    @property
    def is_initialized(self) -> bool:
        """Whether a database is bound (a Valar is open)."""
        return self.obj is not None


#: every model binds to this; ``Valar.open()`` calls ``database_proxy.initialize(db)``
database_proxy = ValarDatabaseProxy()


# --- fields: exact MySQL types -------------------------------------------------------------------


class TinyIntegerField(peewee.IntegerField):
    field_type = "TINYINT"


class MediumIntegerField(peewee.IntegerField):
    field_type = "MEDIUMINT"


class UnsignedTinyIntegerField(peewee.IntegerField):
    field_type = "TINYINT UNSIGNED"


class UnsignedSmallIntegerField(peewee.IntegerField):
    field_type = "SMALLINT UNSIGNED"


class UnsignedMediumIntegerField(peewee.IntegerField):
    field_type = "MEDIUMINT UNSIGNED"


class UnsignedIntegerField(peewee.IntegerField):
    field_type = "INT UNSIGNED"


class UnsignedBigIntegerField(peewee.BigIntegerField):
    field_type = "BIGINT UNSIGNED"


class _UnsignedAutoField(peewee.AutoField):
    """An auto-increment primary key; ``integer_type`` is the type foreign keys to it use."""

    integer_type: ClassVar[str] = "INT UNSIGNED"


class UnsignedTinyAutoField(_UnsignedAutoField):
    field_type = "TINYINT UNSIGNED AUTO_INCREMENT"
    integer_type = "TINYINT UNSIGNED"


class UnsignedSmallAutoField(_UnsignedAutoField):
    field_type = "SMALLINT UNSIGNED AUTO_INCREMENT"
    integer_type = "SMALLINT UNSIGNED"


class UnsignedMediumAutoField(_UnsignedAutoField):
    field_type = "MEDIUMINT UNSIGNED AUTO_INCREMENT"
    integer_type = "MEDIUMINT UNSIGNED"


class UnsignedIntegerAutoField(_UnsignedAutoField):
    field_type = "INT UNSIGNED AUTO_INCREMENT"
    integer_type = "INT UNSIGNED"


class UnsignedBigAutoField(_UnsignedAutoField):
    field_type = "BIGINT UNSIGNED AUTO_INCREMENT"
    integer_type = "BIGINT UNSIGNED"


class DoubleField(peewee.DoubleField):
    field_type = "DOUBLE"


class UnsignedDoubleField(peewee.DoubleField):
    field_type = "DOUBLE UNSIGNED"


class FixedCharField(peewee.FixedCharField):
    """``CHAR(n)``."""

    def __init__(self, max_length: int = 255, *args: Any, **kwargs: Any) -> None:
        peewee.CharField.__init__(self, max_length, *args, **kwargs)


class MediumTextField(peewee.TextField):
    field_type = "MEDIUMTEXT"


class TimestampDateTimeField(peewee.DateTimeField):
    """A MySQL ``TIMESTAMP`` column read as ``datetime`` (not peewee's integer TimestampField)."""

    field_type = "TIMESTAMP"


class MediumBlobField(peewee.BlobField):
    field_type = "MEDIUMBLOB"


class LongBlobField(peewee.BlobField):
    field_type = "LONGBLOB"


class BinaryField(peewee.BlobField):
    """Fixed-length ``BINARY(n)`` (for example a SHA-1 digest); values are ``bytes``.

    >>> BinaryField(max_length=20).get_modifiers()
    [20]
    """

    field_type = "BINARY"

    def __init__(self, max_length: int = 255, *args: Any, **kwargs: Any) -> None:
        self.max_length = max_length
        super().__init__(*args, **kwargs)

    def get_modifiers(self) -> list[int]:
        return [self.max_length]

    def python_value(self, value: Any) -> Any:
        return bytes(value) if isinstance(value, (bytearray, memoryview)) else value


class VarBinaryField(BinaryField):
    """Variable-length ``VARBINARY(n)``."""

    field_type = "VARBINARY"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


class EnumField(peewee.Field):
    """A MySQL ``ENUM('a', 'b', ...)`` column; values are ``str``, checked before writing.

    >>> EnumField(choices=("injection", "cross")).get_modifiers()
    ["'injection'", "'cross'"]
    """

    field_type = "ENUM"

    def __init__(self, choices: Sequence[str] = (), *args: Any, **kwargs: Any) -> None:
        if not choices or not all(isinstance(c, str) for c in choices):
            raise ValueError(
                f"EnumField needs a non-empty sequence of str choices, got {choices!r}"
            )
        super().__init__(*args, choices=tuple(choices), **kwargs)
        self.choices: tuple[str, ...] = tuple(choices)

    def get_modifiers(self) -> list[Any]:
        return [_quote(c) for c in self.choices]

    def ddl_datatype(self, ctx: Any) -> Any:
        # an engine mapping ENUM to another type (SQLite: TEXT) takes no list of choices
        mapped = (
            ctx.state.field_types.get(self.field_type) if ctx and ctx.state.field_types else None
        )
        if mapped and mapped != self.field_type:
            return peewee.SQL(mapped)
        return super().ddl_datatype(ctx)

    def db_value(self, value: Any) -> Any:
        return value if value is None else str(value)

    def python_value(self, value: Any) -> Any:
        return value if value is None else str(value)

    def check_value(self, value: Any) -> None:
        """Raise ``ValueError`` unless ``value`` is None or one of the choices."""
        if value is not None and value not in self.choices:
            raise ValueError(
                f"{self.model.__name__}.{self.name}: {value!r} is not one of {list(self.choices)}"
            )


class ForeignKeyField(peewee.ForeignKeyField):
    """peewee's ForeignKeyField whose column has the referenced key's exact integer type."""

    @property
    def field_type(self) -> str:  # type: ignore[override]
        integer_type = getattr(self.rel_field, "integer_type", None)
        if integer_type is not None:
            return str(integer_type)
        return str(peewee.ForeignKeyField.field_type.fget(self))  # type: ignore[attr-defined]


#: each field_type string used by the model -> the SQLite column type for it
SQLITE_AFFINITY: dict[str, str] = {
    "TINYINT": "INTEGER",
    "SMALLINT": "INTEGER",
    "MEDIUMINT": "INTEGER",
    "INT": "INTEGER",
    "TINYINT UNSIGNED": "INTEGER",
    "SMALLINT UNSIGNED": "INTEGER",
    "MEDIUMINT UNSIGNED": "INTEGER",
    "INT UNSIGNED": "INTEGER",
    "BIGINT UNSIGNED": "INTEGER",
    "TINYINT UNSIGNED AUTO_INCREMENT": "INTEGER",
    "SMALLINT UNSIGNED AUTO_INCREMENT": "INTEGER",
    "MEDIUMINT UNSIGNED AUTO_INCREMENT": "INTEGER",
    "INT UNSIGNED AUTO_INCREMENT": "INTEGER",
    "BIGINT UNSIGNED AUTO_INCREMENT": "INTEGER",
    "BOOL": "INTEGER",
    "DOUBLE": "REAL",
    "DOUBLE UNSIGNED": "REAL",
    "CHAR": "TEXT",
    "VARCHAR": "TEXT",
    "TEXT": "TEXT",
    "MEDIUMTEXT": "TEXT",
    "ENUM": "TEXT",
    "DATE": "DATE",
    "DATETIME": "DATETIME",
    "TIMESTAMP": "DATETIME",
    "BINARY": "BLOB",
    "VARBINARY": "BLOB",
    "BLOB": "BLOB",
    "MEDIUMBLOB": "BLOB",
    "LONGBLOB": "BLOB",
}


# --- the description frame (pandas is optional) --------------------------------------------------

PANDAS_HINT = "pandas is needed for get_desc(): install it with `pip install valarfast[pandas]`"


@lru_cache(maxsize=1)
def _table_description_frame() -> type:
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError(PANDAS_HINT) from e

    class TableDescriptionFrame(pd.DataFrame):
        """A pandas DataFrame describing a table's columns (one row per column)."""

        @property
        def _constructor(self) -> type:
            return TableDescriptionFrame

    TableDescriptionFrame.__module__ = __name__
    TableDescriptionFrame.__qualname__ = "TableDescriptionFrame"
    return TableDescriptionFrame


#: the DataFrame subclass get_desc() returns; made on first access (imports pandas)
TableDescriptionFrame: Any  # annotation only: module __getattr__ supplies the value


def __getattr__(name: str) -> Any:
    if name == "TableDescriptionFrame":
        return _table_description_frame()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- BaseModel -----------------------------------------------------------------------------------

M = TypeVar("M", bound="BaseModel")

_STRING_FIELDS = (peewee.CharField, peewee.FixedCharField, EnumField)
# valarpy's own field classes and the type names its get_desc_list gave them
_VALARPY_FIELD_TYPES: dict[type, str] = {EnumField: "ENUM", BinaryField: "BINARY"}


class _class_only:  # a descriptor used like @classmethod
    """Like classmethod, but refuses to be called on an instance (no whole-table DELETE)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, instance: Any, owner: type) -> Callable[..., Any]:
        if instance is not None:
            raise TypeError(
                f"{owner.__name__}.{self.fn.__name__}() is a class method that affects the whole "
                f"table; to delete one row call instance.delete_instance()"
            )
        return self.fn.__get__(owner, owner)


def _to_id(thing: Any) -> int:
    """An id from an int or a whole float; ValueError for NaN or a fraction."""
    if isinstance(thing, numbers.Integral):
        return int(thing)
    value = float(thing)
    if not math.isfinite(value) or not value.is_integer():
        raise ValueError(f"{thing!r} is not a valid id (not a whole number)")
    return int(value)


def _is_id(thing: Any) -> bool:
    return isinstance(thing, numbers.Real) and not isinstance(thing, bool)


def _is_collection(value: Any) -> bool:
    """A list, tuple, set, array... of values (not a str, bytes, query or model instance)."""
    return isinstance(value, Iterable) and not isinstance(
        value, (str, bytes, bytearray, memoryview, peewee.Node, peewee.Model)
    )


def _collation_key(text: str) -> str:
    """Roughly how a case-insensitive PAD SPACE collation compares strings."""
    return text.casefold().rstrip(" ")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class BaseModel(peewee.Model):
    """The base of every Valar model: valarpy 3's conveniences and the ORM write guard.

    Lookups (``fetch`` and friends) always send values as query parameters.

    Write guard: while writing is off (:mod:`valarfast.guard`), ``save``, ``delete_instance``,
    ``create``, ``insert``, ``insert_many``, ``insert_from``, ``replace``, ``replace_many``,
    ``update``, ``delete``, ``bulk_create``, ``bulk_update``, ``set_by_id``, ``delete_by_id`` and
    ``get_or_create`` (even when the row exists: use ``fetch_or_none``) raise
    :class:`WriteNotEnabledError` before any query is built. ``drop_table``,
    ``truncate_table`` and ``raw`` always raise :class:`UnsupportedOperationError`.
    ``delete()`` is class-only: on an instance it raises ``TypeError`` (never a table DELETE).
    ``save`` checks ENUM values and CHAR/VARCHAR lengths before sending anything.
    """

    _sstring_prefix: ClassVar[str | None] = None

    class Meta:
        database = database_proxy
        legacy_table_names = False

    # --- lookups ---------------------------------------------------------------------------------

    @classmethod
    def get_indexing_cols(cls) -> list[str]:
        """Names of the unique CHAR/VARCHAR/ENUM fields that ``fetch`` matches strings against.

        >>> from valarfast.model import Runs
        >>> Runs.get_indexing_cols()
        ['name', 'tag']
        """
        return [
            f.name
            for f in cls._meta.sorted_fields
            if f.unique and isinstance(f, _STRING_FIELDS) and not f.primary_key
        ]

    @classmethod
    def _string_condition(cls, thing: str, like: bool, regex: bool) -> Any:
        columns = cls.get_indexing_cols()
        if not columns:
            raise TypeError(
                f"{cls.__name__} has no unique text column to look up {thing!r} by; use an id"
            )
        parts: list[Any] = []
        for name in columns:
            field = cls._meta.fields[name]
            if like:
                parts.append(
                    peewee.NodeList(
                        (
                            field,
                            peewee.SQL("LIKE"),
                            peewee.Value(f"%{_escape_like(thing)}%", converter=False),
                            peewee.SQL("ESCAPE"),
                            peewee.Value("\\", converter=False),
                        )
                    )
                )
            elif regex:
                parts.append(
                    peewee.NodeList(
                        (field, peewee.SQL("REGEXP"), peewee.Value(thing, converter=False))
                    )
                )
            else:
                parts.append(field == thing)
        condition: Any = parts[0]
        for part in parts[1:]:
            condition = condition | part
        return condition

    @classmethod
    def _check_instance(cls, thing: Any) -> None:
        if isinstance(thing, peewee.Model) and not isinstance(thing, cls):
            raise ValarTableTypeError(
                f"{cls.__name__} was given a {type(thing).__name__} instance ({thing!r})"
            )

    @classmethod
    def fetch_or_none(
        cls: type[M], thing: Any, like: bool = False, regex: bool = False
    ) -> M | None:
        """The row ``thing`` names, or None.

        ``thing``: an instance of this class (returned as is), an int or whole float (the id), or a
        str matched against the unique text columns (:meth:`get_indexing_cols`): by ``=`` (so as
        the column's collation compares: Valar's ignores case and trailing spaces); with
        ``like=True`` as a literal substring (``%`` and ``_`` in ``thing`` match themselves,
        case follows the column's collation); with ``regex=True`` by ``REGEXP``. When several rows
        match, the one with the lowest id is returned.

        >>> Refs.fetch_or_none("ref_four")              # doctest: +SKIP
        <Refs: 4>
        """
        if like and regex:
            raise ValueError("fetch: pass like=True or regex=True, not both")
        if isinstance(thing, cls):
            return thing
        cls._check_instance(thing)
        if _is_id(thing):
            return cls.select().where(cls._meta.primary_key == _to_id(thing)).first()
        if isinstance(thing, str):
            condition = cls._string_condition(thing, like, regex)
            return cls.select().where(condition).order_by(cls._meta.primary_key).first()
        raise TypeError(
            f"{cls.__name__}.fetch takes an id, a str or a {cls.__name__} instance, "
            f"not {type(thing).__name__} ({thing!r})"
        )

    @classmethod
    def fetch(cls: type[M], thing: Any, like: bool = False, regex: bool = False) -> M:
        """Like :meth:`fetch_or_none` but raises :class:`ValarLookupError` when nothing matches."""
        found = cls.fetch_or_none(thing, like=like, regex=regex)
        if found is None:
            how = " (LIKE)" if like else " (REGEXP)" if regex else ""
            raise ValarLookupError(
                f"no {cls.__name__} row (table {cls._meta.table_name}) matches {thing!r}{how}"
            )
        return found

    @classmethod
    def fetch_all_or_none(
        cls: type[M],
        things: Iterable[Any],
        join_fn: Callable[[Any], Any] | None = None,
    ) -> list[M | None]:
        """One result per item of ``things``, in order, duplicates kept, None for a miss.

        Queries: none when every item is an instance, one for ids only or strings only, two for
        both. ``join_fn`` maps the base select (``cls.select()``) to a joined one.
        """
        if isinstance(things, (str, bytes)) or not isinstance(things, Iterable):
            raise TypeError(
                f"{cls.__name__}.fetch_all takes a list of ids, strings or instances, "
                f"not {type(things).__name__}"
            )
        items = list(things)
        ids: set[int] = set()
        names: set[str] = set()
        for thing in items:
            if isinstance(thing, cls):
                continue
            cls._check_instance(thing)
            if _is_id(thing):
                ids.add(_to_id(thing))
            elif isinstance(thing, str):
                names.add(thing)
            else:
                raise TypeError(
                    f"{cls.__name__}.fetch_all takes ids, strings or {cls.__name__} instances, "
                    f"not {type(thing).__name__} ({thing!r})"
                )

        def base() -> Any:
            query = cls.select()
            return join_fn(query) if join_fn is not None else query

        pk: Any = cls._meta.primary_key
        by_id: dict[int, Any] = {}
        by_name: dict[str, Any] = {}
        if ids:
            for row in base().where(pk.in_(sorted(ids))):
                by_id[row.get_id()] = row
        if names:
            columns = cls.get_indexing_cols()
            if not columns:
                raise TypeError(f"{cls.__name__} has no unique text column to look strings up by")
            fields = [cls._meta.fields[c] for c in columns]
            condition: Any = fields[0].in_(sorted(names))
            for f in fields[1:]:
                condition = condition | f.in_(sorted(names))
            # lowest id wins when one string matches several rows (as in fetch); the server
            # compared by the column's collation (Valar's is case-insensitive), so rows are
            # found by exact value first, then by an approximation of that collation
            by_key: dict[str, Any] = {}
            for row in base().where(condition).order_by(pk.desc()):
                for f in fields:
                    value = row.__data__.get(f.name)
                    if isinstance(value, str):
                        by_name[value] = row
                        by_key[_collation_key(value)] = row
            for name in names - by_name.keys():
                if _collation_key(name) in by_key:
                    by_name[name] = by_key[_collation_key(name)]
        out: list[M | None] = []
        for thing in items:
            if isinstance(thing, cls):
                out.append(thing)
            elif isinstance(thing, str):
                out.append(by_name.get(thing))
            else:
                out.append(by_id.get(_to_id(thing)))
        return out

    @classmethod
    def fetch_all(
        cls: type[M],
        things: Iterable[Any],
        join_fn: Callable[[Any], Any] | None = None,
    ) -> list[M]:
        """Like :meth:`fetch_all_or_none` but raises :class:`ValarLookupError` naming the misses."""
        items = list(things) if not isinstance(things, (str, bytes)) else things
        found = cls.fetch_all_or_none(items, join_fn=join_fn)
        missing = [thing for thing, row in zip(items, found, strict=True) if row is None]
        if missing:
            raise ValarLookupError(
                f"no {cls.__name__} row (table {cls._meta.table_name}) matches {missing!r}"
            )
        return found  # type: ignore[return-value]

    @classmethod
    def fetch_to_query(cls, thing: Any) -> list[Any]:
        """peewee expressions to AND together: expressions pass through, the rest -> ``id IN``.

        ``thing`` is one item or a list of them; strings are resolved with :meth:`fetch_all`
        (one query, :class:`ValarLookupError` for a miss); ids and instances need no query.
        """
        items = list(thing) if _is_collection(thing) else [thing]
        expressions: list[Any] = []
        ids: list[int] = []
        names: list[str] = []
        for item in items:
            if isinstance(item, peewee.Node) and not isinstance(item, peewee.Model):
                expressions.append(item)
            elif isinstance(item, cls):
                ids.append(item.get_id())
            elif isinstance(item, str):
                names.append(item)
            elif _is_id(item):
                ids.append(_to_id(item))
            else:
                cls._check_instance(item)
                raise TypeError(
                    f"{cls.__name__}.fetch_to_query takes expressions, ids, strings or instances, "
                    f"not {type(item).__name__} ({item!r})"
                )
        if names:
            ids.extend(row.get_id() for row in cls.fetch_all(names))
        if ids or not expressions:
            pk: Any = cls._meta.primary_key
            expressions.append(pk.in_(ids))
        return expressions

    @classmethod
    def list_where(cls: type[M], *expressions: Any, **column_values: Any) -> list[M]:
        """Rows matching every expression and every ``field=value`` (a collection -> IN).

        >>> Runs.list_where(Runs.id > 10, tag="x")        # doctest: +SKIP
        []
        """
        conditions = list(expressions)
        for name, value in column_values.items():
            field = cls._meta.fields.get(name)
            if field is None:
                field = cls._meta.combined.get(name)
            if field is None:
                raise ValueError(f"{cls.__name__} has no field {name!r}")
            if _is_collection(value):
                conditions.append(field.in_(list(value)))
            else:
                conditions.append(field.is_null() if value is None else field == value)
        query = cls.select()
        if conditions:
            query = query.where(*conditions)
        return list(query)

    # --- values and descriptions -----------------------------------------------------------------

    def get_data(self) -> dict[str, Any]:
        """The values this row holds, as a new dict (foreign keys as ids; no extra query).

        As in valarpy, a field never set (nor defaulted) is left out rather than given as None;
        a row read from the database holds every selected column.

        >>> from valarfast.model import Refs
        >>> Refs(id=1, name="hi").get_data()
        {'id': 1, 'name': 'hi'}
        """
        data = self.__data__
        return {f.name: data[f.name] for f in self._meta.sorted_fields if f.name in data}

    @property
    def _data(self) -> dict[str, Any]:
        """Same as :meth:`get_data` (valarpy 3 name)."""
        return self.get_data()

    @property
    def sstring(self) -> str:
        """A short label: lowercase capitals of the class name plus id (``ct1``, ``ref.4``).

        >>> from valarfast.model import ControlTypes, Refs
        >>> ControlTypes(id=1).sstring, Refs(id=4).sstring
        ('ct1', 'ref.4')
        """
        prefix = self._sstring_prefix
        if prefix is None:
            prefix = "".join(c for c in type(self).__name__ if c.isupper()).lower()
        return f"{prefix}{self.get_id()}"

    @classmethod
    def _column_type(cls, field: peewee.Field) -> str:
        modifiers = field.get_modifiers()
        base = str(field.field_type)
        if isinstance(field, EnumField) or not modifiers:
            return base if not modifiers else f"{base}({', '.join(map(str, modifiers))})"
        return f"{base}({', '.join(map(str, modifiers))})"

    @classmethod
    def _generic_type(cls, field: peewee.Field) -> str:
        """peewee's own name of a column's type, as valarpy reported it (``AUTO``, ``VARCHAR``)."""
        if isinstance(field, peewee.ForeignKeyField):
            rel = field.rel_field
            if isinstance(rel, peewee.AutoField):
                return "BIGINT" if isinstance(rel, peewee.BigAutoField) else "INT"
            return cls._generic_type(rel)
        for klass in type(field).__mro__:
            if klass in _VALARPY_FIELD_TYPES:
                return _VALARPY_FIELD_TYPES[klass]
            name = getattr(klass, "field_type", None) if klass.__module__ == "peewee" else None
            if isinstance(name, str) and name:
                return name
        return str(field.field_type)

    @classmethod
    def _constraint_texts(cls, field: peewee.Field) -> list[str]:
        """The column's constraints as SQL text (DEFAULT ..., REFERENCES ...)."""
        texts = [str(getattr(c, "sql", c)) for c in (field.constraints or [])]
        if isinstance(field, peewee.ForeignKeyField):
            ref = f"REFERENCES {field.rel_model._meta.table_name} ({field.rel_field.column_name})"
            if field.on_delete:
                ref += f" ON DELETE {field.on_delete}"
            texts.append(ref)
        return texts

    @classmethod
    def get_desc_list(cls) -> list[dict[str, Any]]:
        """Per column, valarpy's keys and values: name, type, nullable, choices, primary, unique,
        constraints (``type`` is peewee's type name, ``constraints`` the number of constraints).

        :meth:`get_schema` gives the exact MySQL types and the constraints' text.

        >>> from valarfast.model import Refs
        >>> Refs.get_desc_list()[0]["type"], Refs.get_desc_list()[0]["constraints"]
        ('AUTO', 0)
        """
        return [
            {
                "name": field.name,
                "type": cls._generic_type(field),
                "nullable": bool(field.null),
                "choices": list(field.choices) if field.choices else None,
                "primary": bool(field.primary_key),
                "unique": bool(field.unique),
                "constraints": len(field.constraints or []),
            }
            for field in cls._meta.sorted_fields
        ]

    @classmethod
    def get_desc(cls) -> Any:
        """:meth:`get_desc_list` as a ``TableDescriptionFrame`` (needs pandas)."""
        frame_class = _table_description_frame()
        return frame_class(cls.get_desc_list())

    @classmethod
    def get_schema(cls) -> str:
        """One line per column: ``column TYPE [NOT NULL] [PRIMARY KEY] [UNIQUE] [constraints]``."""
        lines = []
        for field in cls._meta.sorted_fields:
            words = [field.column_name, cls._column_type(field)]
            if not field.null:
                words.append("NOT NULL")
            if field.primary_key:
                words.append("PRIMARY KEY")
            if field.unique:
                words.append("UNIQUE")
            words.extend(cls._constraint_texts(field))
            lines.append(" ".join(words))
        return "\n".join(lines)

    @classmethod
    def get_schema_lines(cls) -> str:
        """Older valarpy name of :meth:`get_schema`."""
        return cls.get_schema()

    # --- the write guard (ORM level) -------------------------------------------------------------

    def _check_values(self) -> None:
        for field in self._meta.sorted_fields:
            value = self.__data__.get(field.name)
            if isinstance(field, EnumField):
                field.check_value(value)
            elif isinstance(value, str) and isinstance(field, _STRING_FIELDS[:2]):
                limit = field.max_length
                if limit is not None and len(value) > limit:
                    raise ValueError(
                        f"{type(self).__name__}.{field.name}: {len(value)} characters, "
                        f"longer than the column's {limit}"
                    )

    def save(self, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{type(self).__name__}.save()")
        self._check_values()
        return super().save(*args, **kwargs)

    def delete_instance(self, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{type(self).__name__}.delete_instance()")
        return super().delete_instance(*args, **kwargs)

    @classmethod
    def create(cls: type[M], **query: Any) -> M:
        guard.require_write(f"{cls.__name__}.create()")
        return super().create(**query)

    @classmethod
    def insert(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.insert()")
        return super().insert(*args, **kwargs)

    @classmethod
    def insert_many(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.insert_many()")
        return super().insert_many(*args, **kwargs)

    @classmethod
    def insert_from(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.insert_from()")
        return super().insert_from(*args, **kwargs)

    @classmethod
    def replace(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.replace()")
        return super().replace(*args, **kwargs)

    @classmethod
    def replace_many(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.replace_many()")
        return super().replace_many(*args, **kwargs)

    @classmethod
    def update(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.update()")
        return super().update(*args, **kwargs)

    @_class_only
    def delete(cls: Any) -> Any:  # bound to the class by _class_only
        """A DELETE query for this table (class only; an instance uses delete_instance())."""
        guard.require_write(f"{cls.__name__}.delete()")
        return peewee.ModelDelete(cls)

    @classmethod
    def bulk_create(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.bulk_create()")
        return super().bulk_create(*args, **kwargs)

    @classmethod
    def bulk_update(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.bulk_update()")
        return super().bulk_update(*args, **kwargs)

    @classmethod
    def set_by_id(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.set_by_id()")
        return super().set_by_id(*args, **kwargs)

    @classmethod
    def delete_by_id(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.delete_by_id()")
        return super().delete_by_id(*args, **kwargs)

    @classmethod
    def get_or_create(cls, *args: Any, **kwargs: Any) -> Any:
        guard.require_write(f"{cls.__name__}.get_or_create()")
        return super().get_or_create(*args, **kwargs)

    @classmethod
    def drop_table(cls, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedOperationError(
            f"{cls.__name__}.drop_table(): valarfast never drops tables"
        )

    @classmethod
    def truncate_table(cls, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedOperationError(
            f"{cls.__name__}.truncate_table(): valarfast never truncates tables"
        )

    @classmethod
    def raw(cls, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedOperationError(
            f"{cls.__name__}.raw(): raw SQL through the model is not supported; use the "
            "model's query builder, or database.execute_sql() for reads"
        )
