"""Generate valarfast/model.py from Valar's schema (tests/resources/testdb.sql).

Usage::

    python scripts/gen_model.py                 # writes valarfast/model.py
    python scripts/gen_model.py --check         # exit 1 if model.py is not what it would write
    python scripts/gen_model.py --stdout        # print instead of writing

Naming: table ``well_features`` -> class ``WellFeatures``; a foreign key column ``run_id`` ->
field ``run`` (a column without ``_id``, like ``part_of``, keeps its name); other columns keep
their names. Backrefs: peewee's default ``<classname>_set``, or ``<classname>_<field>_set`` when
one model has several foreign keys to the same table. The output is deterministic.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "resources" / "testdb.sql"
OUTPUT = ROOT / "valarfast" / "model.py"

# sstring prefixes that are not the capitals of the class name (valarpy's overrides)
SSTRING_PREFIXES = {"refs": "ref.", "stimuli": "stim.", "rois": "roi."}

# names a field must not take: BaseModel / peewee.Model attributes
RESERVED = frozenset(
    {
        "alias", "bind", "bind_ctx", "bulk_create", "bulk_update", "clone", "coerce", "create",
        "create_table", "delete", "delete_by_id", "delete_instance", "dependencies",
        "dirty_fields", "drop_table", "fetch", "fetch_all", "fetch_all_or_none", "fetch_or_none",
        "fetch_to_query", "filter", "get", "get_by_id", "get_data", "get_desc", "get_desc_list",
        "get_id", "get_indexing_cols", "get_or_create", "get_or_none", "get_schema", "index",
        "insert", "insert_from", "insert_many", "is_alias", "is_dirty", "list_where", "noop", "raw",
        "replace", "replace_many", "save", "select", "set_by_id", "sstring", "table_exists",
        "truncate_table", "update",
    }
)

# (mysql base type, unsigned) -> (field class, takes a length)
INTEGER_FIELDS = {
    ("tinyint", False): "TinyIntegerField",
    ("smallint", False): "SmallIntegerField",
    ("mediumint", False): "MediumIntegerField",
    ("int", False): "IntegerField",
    ("bigint", False): "BigIntegerField",
    ("tinyint", True): "UnsignedTinyIntegerField",
    ("smallint", True): "UnsignedSmallIntegerField",
    ("mediumint", True): "UnsignedMediumIntegerField",
    ("int", True): "UnsignedIntegerField",
    ("bigint", True): "UnsignedBigIntegerField",
}
AUTO_FIELDS = {
    "tinyint": "UnsignedTinyAutoField",
    "smallint": "UnsignedSmallAutoField",
    "mediumint": "UnsignedMediumAutoField",
    "int": "UnsignedIntegerAutoField",
    "bigint": "UnsignedBigAutoField",
}
PLAIN_FIELDS = {
    "bool": "BooleanField",
    "boolean": "BooleanField",
    "double": "DoubleField",
    "text": "TextField",
    "mediumtext": "MediumTextField",
    "datetime": "DateTimeField",
    "timestamp": "TimestampDateTimeField",
    "date": "DateField",
    "blob": "BlobField",
    "mediumblob": "MediumBlobField",
    "longblob": "LongBlobField",
}
LENGTH_FIELDS = {
    "varchar": "CharField",
    "char": "FixedCharField",  # valarfast.metamodel's (typed max_length)
    "binary": "BinaryField",
    "varbinary": "VarBinaryField",
}
PEEWEE_CLASSES = frozenset(
    {
        "BigIntegerField", "BlobField", "BooleanField", "CharField", "DateField", "DateTimeField",
        "IntegerField", "SmallIntegerField", "TextField",
    }
)


class SchemaError(ValueError):
    """The schema has something the generator does not understand."""


@dataclass
class Column:
    name: str
    base: str  # lowercase MySQL type name
    args: list[str]  # inside the parentheses (lengths, enum choices)
    unsigned: bool
    nullable: bool
    default: str | None  # SQL text of the default, None when there is none
    auto_increment: bool


@dataclass
class ForeignKey:
    column: str
    table: str
    target_column: str
    on_delete: str | None


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    unique: list[tuple[str, list[str]]] = field(default_factory=list)
    keys: list[tuple[str, list[str]]] = field(default_factory=list)
    foreign_keys: dict[str, ForeignKey] = field(default_factory=dict)


# --- parsing ------------------------------------------------------------------------------------

_CREATE = re.compile(r"CREATE TABLE\s+`(\w+)`\s*\((.*?)\n\)\s*ENGINE[^;]*;", re.S | re.I)
_COLUMN = re.compile(
    r"`(?P<name>\w+)`\s+(?P<base>\w+)\s*(?:\((?P<args>[^)]*)\))?\s*(?P<rest>.*)", re.S | re.I
)
_KEY_COLS = re.compile(r"\(([^)]*)\)")
_FK = re.compile(
    r"CONSTRAINT\s+`\w+`\s+FOREIGN KEY\s*\(`(\w+)`\)\s*REFERENCES\s+`(\w+)`\s*\(`(\w+)`\)"
    r"(?:\s+ON DELETE\s+(CASCADE|SET NULL|RESTRICT|NO ACTION))?\s*$",
    re.I,
)


def _split_top_level(body: str) -> list[str]:
    """Split a CREATE TABLE body at commas outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(body):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    return [" ".join(p.split()) for p in parts if p.strip()]


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def _names(spec: str) -> list[str]:
    m = _KEY_COLS.search(spec)
    if m is None:
        raise SchemaError(f"no column list in {spec!r}")
    return [n.strip().strip("`") for n in m.group(1).split(",")]


def _parse_column(spec: str) -> Column:
    m = _COLUMN.match(spec)
    if m is None:
        raise SchemaError(f"cannot parse column {spec!r}")
    rest = m.group("rest")
    low = rest.lower()
    args_text = m.group("args")
    args = [a.strip() for a in args_text.split(",")] if args_text else []
    if m.group("base").lower() == "enum":
        args = re.findall(r"'((?:[^']|'')*)'", args_text or "")
        args = [a.replace("''", "'") for a in args]
    default = None
    dm = re.search(r"\bdefault\s+('(?:[^']|'')*'|[\w.]+(?:\(\))?)", rest, re.I)
    if dm is not None and dm.group(1).lower() != "null":
        default = dm.group(1)
    return Column(
        name=m.group("name"),
        base=m.group("base").lower(),
        args=args,
        unsigned=bool(re.search(r"\bunsigned\b", low)),
        nullable=not re.search(r"\bnot null\b", low),
        default=default,
        auto_increment="auto_increment" in low,
    )


def parse_schema(text: str) -> list[Table]:
    """Every CREATE TABLE of ``text``, in file order."""
    tables = []
    for m in _CREATE.finditer(_strip_comments(text)):
        table = Table(m.group(1))
        for spec in _split_top_level(m.group(2)):
            upper = spec.upper()
            if spec.startswith("`"):
                table.columns.append(_parse_column(spec))
            elif upper.startswith("PRIMARY KEY"):
                table.primary_key = _names(spec)
            elif upper.startswith("UNIQUE KEY"):
                table.unique.append((spec.split("`")[1], _names(spec)))
            elif upper.startswith("KEY"):
                table.keys.append((spec.split()[1].strip("`"), _names(spec)))
            elif upper.startswith("CONSTRAINT"):
                fk = _FK.match(spec)
                if fk is None:
                    raise SchemaError(f"{table.name}: cannot parse {spec!r}")
                on_delete = fk.group(4).upper() if fk.group(4) else None
                table.foreign_keys[fk.group(1)] = ForeignKey(
                    fk.group(1), fk.group(2), fk.group(3), on_delete
                )
            else:
                raise SchemaError(f"{table.name}: cannot parse {spec!r}")
        tables.append(table)
    if not tables:
        raise SchemaError("no CREATE TABLE found")
    return tables


# --- naming -------------------------------------------------------------------------------------


def class_name(table: str) -> str:
    """``well_features`` -> ``WellFeatures``."""
    return "".join(part.capitalize() for part in table.split("_"))


def field_name(column: str, is_fk: bool) -> str:
    return column[:-3] if is_fk and column.endswith("_id") else column


# --- writing ------------------------------------------------------------------------------------


def _py(value: object) -> str:
    return repr(value)


def _default_args(col: Column) -> list[str]:
    """``default=`` (Python side, literals only) and the DDL DEFAULT constraint."""
    if col.default is None:
        return []
    text = col.default
    out = []
    if text.lower() in ("current_timestamp()", "current_timestamp"):
        out.append('constraints=[SQL("DEFAULT CURRENT_TIMESTAMP")]')
        return out
    if text.startswith("'"):
        value: object = text[1:-1].replace("''", "'")
    elif col.base in ("bool", "boolean"):
        value = text not in ("0", "false", "FALSE")
    elif re.fullmatch(r"-?\d+", text):
        value = int(text)
    elif re.fullmatch(r"-?\d+\.\d*", text):
        value = float(text)
    else:
        raise SchemaError(f"column {col.name}: unsupported default {text!r}")
    out.append(f"default={_py(value)}")
    sql_literal = text if not isinstance(value, bool) else str(int(value))
    out.append(f"constraints=[SQL({_py('DEFAULT ' + sql_literal)})]")
    return out


def _field_expr(table: Table, col: Column, unique_single: set[str]) -> tuple[str, list[str]]:
    """(field class, constructor arguments) for a non-foreign-key column."""
    args: list[str] = []
    base = col.base
    if col.name in table.primary_key:
        if not col.auto_increment or base not in AUTO_FIELDS or not col.unsigned:
            raise SchemaError(f"{table.name}.{col.name}: unsupported primary key")
        return AUTO_FIELDS[base], []
    if base in ("tinyint", "smallint", "mediumint", "int", "bigint"):
        if base == "tinyint" and col.args == ["1"] and not col.unsigned:
            cls = "BooleanField"
        else:
            cls = INTEGER_FIELDS[(base, col.unsigned)]
    elif base in ("double", "real"):
        cls = "UnsignedDoubleField" if col.unsigned else "DoubleField"
    elif base in PLAIN_FIELDS:
        cls = PLAIN_FIELDS[base]
    elif base in LENGTH_FIELDS:
        cls = LENGTH_FIELDS[base]
        if len(col.args) != 1:
            raise SchemaError(f"{table.name}.{col.name}: {base} needs one length")
        args.append(f"max_length={int(col.args[0])}")
    elif base == "enum":
        cls = "EnumField"
        args.append(f"choices={_py(tuple(col.args))}")
    else:
        raise SchemaError(f"{table.name}.{col.name}: unsupported type {base!r}")
    if col.nullable:
        args.append("null=True")
    if col.name in unique_single:
        args.append("unique=True")
    args.extend(_default_args(col))
    return cls, args


def _topological(tables: list[Table]) -> list[Table]:
    """Tables ordered so that a referenced table comes first (ties alphabetical)."""
    by_name = {t.name: t for t in tables}
    deps = {
        t.name: {fk.table for fk in t.foreign_keys.values() if fk.table != t.name} for t in tables
    }
    for name, targets in deps.items():
        unknown = targets - by_name.keys()
        if unknown:
            raise SchemaError(f"{name} references unknown tables {sorted(unknown)}")
    done: list[str] = []
    remaining = sorted(by_name)
    while remaining:
        ready = [n for n in remaining if deps[n] <= set(done)]
        if not ready:
            raise SchemaError(f"foreign-key cycle among {remaining}")
        done.append(ready[0])
        remaining.remove(ready[0])
    return [by_name[n] for n in done]


def _backrefs(tables: list[Table]) -> dict[tuple[str, str], str]:
    """(table, column) -> backref name; checked to be unique on each target model."""
    out: dict[tuple[str, str], str] = {}
    used: dict[str, set[str]] = {}
    for t in sorted(tables, key=lambda t: t.name):
        per_target: dict[str, list[str]] = {}
        for col in sorted(t.foreign_keys):
            per_target.setdefault(t.foreign_keys[col].table, []).append(col)
        for target, cols in per_target.items():
            for col in cols:
                fname = field_name(col, True)
                low = class_name(t.name).lower()
                name = f"{low}_set" if len(cols) == 1 else f"{low}_{fname}_set"
                target_fields = {
                    field_name(c.name, c.name in target_table.foreign_keys)
                    for target_table in tables
                    if target_table.name == target
                    for c in target_table.columns
                }
                if name in used.setdefault(target, set()) or name in target_fields:
                    raise SchemaError(f"backref {name} clashes on {target}")
                if name in RESERVED:
                    raise SchemaError(f"backref {name} is a reserved name")
                used[target].add(name)
                out[(t.name, col)] = name
    return out


def _indexes(t: Table, field_names: dict[str, str]) -> list[tuple[tuple[str, ...], bool]]:
    """Meta.indexes: multi-column unique keys, then plain keys, without duplicates.

    A plain key on exactly the columns of a unique key (or of an earlier key) is left out: the
    unique index serves the same lookups, and peewee would give both the same index name.
    """
    seen = {tuple(cols) for _, cols in t.unique}
    out = [(tuple(field_names[c] for c in cols), True) for _, cols in t.unique if len(cols) > 1]
    for _, cols in t.keys:
        if tuple(cols) not in seen:
            seen.add(tuple(cols))
            out.append((tuple(field_names[c] for c in cols), False))
    return out


def render(tables: list[Table]) -> str:
    """The text of model.py."""
    if len({class_name(t.name) for t in tables}) != len(tables):
        raise SchemaError("two tables map to the same class name")
    backrefs = _backrefs(tables)
    used_classes: set[str] = {"ForeignKeyField"}
    body: list[str] = []
    for t in _topological(tables):
        unique_single = {cols[0] for _, cols in t.unique if len(cols) == 1}
        cname = class_name(t.name)
        body.append("")
        body.append("")
        body.append(f"class {cname}(BaseModel):")
        field_names: dict[str, str] = {}
        # valarpy's field order (its model came from pwiz): the primary key, then by column name
        for col in sorted(t.columns, key=lambda c: (c.name not in t.primary_key, c.name)):
            is_fk = col.name in t.foreign_keys
            fname = field_name(col.name, is_fk)
            if fname in field_names.values() or fname in RESERVED or keyword.iskeyword(fname):
                raise SchemaError(f"{t.name}.{col.name}: field name {fname!r} is taken")
            if is_fk and fname + "_id" in {c.name for c in t.columns} and fname + "_id" != col.name:
                raise SchemaError(f"{t.name}.{col.name}: clashes with the id accessor")
            field_names[col.name] = fname
            if is_fk:
                fk = t.foreign_keys[col.name]
                target = "'self'" if fk.table == t.name else class_name(fk.table)
                args = [target, f"column_name={_py(col.name)}", f"field={_py(fk.target_column)}"]
                args.append(f"backref={_py(backrefs[(t.name, col.name)])}")
                if fk.on_delete:
                    args.append(f"on_delete={_py(fk.on_delete)}")
                if col.nullable:
                    args.append("null=True")
                if col.name in unique_single:
                    args.append("unique=True")
                args.append("index=False")
                args.extend(_default_args(col))
                body.append(f"    {fname} = ForeignKeyField({', '.join(args)})")
            else:
                cls, args = _field_expr(t, col, unique_single)
                used_classes.add(cls)
                if fname != col.name:
                    args.insert(0, f"column_name={_py(col.name)}")
                body.append(f"    {fname} = {cls}({', '.join(args)})")
        indexes = _indexes(t, field_names)
        body.append("")
        body.append("    class Meta:")
        body.append(f"        table_name = {_py(t.name)}")
        if indexes:
            body.append("        indexes = (")
            for cols_t, uniq in indexes:
                body.append(f"            ({_py(cols_t)}, {uniq}),")
            body.append("        )")
        if t.name in SSTRING_PREFIXES:
            body.append("")
            body.append(f"    _sstring_prefix = {_py(SSTRING_PREFIXES[t.name])}")

    peewee_imports = sorted(c for c in used_classes if c in PEEWEE_CLASSES)
    own_imports = sorted(c for c in used_classes if c not in PEEWEE_CLASSES)
    names = [class_name(t.name) for t in sorted(tables, key=_name)]
    head = [
        '"""Valar\'s tables as peewee models, one class per table.',
        "",
        "GENERATED by scripts/gen_model.py from tests/resources/testdb.sql — do not edit.",
        "Regenerate with ``python scripts/gen_model.py``.",
        "",
        "Classes bind to ``valarfast.metamodel.database_proxy``: importing needs no connection;",
        "a query needs an open one (``valarfast.opened()`` or ``Valar(config).open()``).",
        "",
        ">>> from valarfast.model import Refs",
        ">>> Refs._meta.table_name",
        "'refs'",
        '"""',
        "",
        "# ruff: noqa: E501  (one field a line, however long)",
        "from __future__ import annotations",
        "",
        "from typing import Any",
        "",
        "from peewee import (",
        "    SQL,",
        *[f"    {c}," for c in peewee_imports],
        ")",
        "",
        "from valarfast.errors import (",
        "    NotConnectedError,",
        "    UnsupportedOperationError,",
        "    ValarLookupError,",
        "    ValarTableTypeError,",
        "    WriteNotEnabledError,",
        ")",
        "from valarfast.metamodel import (",
        "    NOT_CONNECTED_MESSAGE,",
        "    BaseModel,",
        *[f"    {c}," for c in own_imports],
        "    database_proxy,",
        ")",
        "",
        "#: the open ``Valar`` (set by ``Valar.open()``, None when closed)",
        "conn: Any = None",
        "",
        "",
        "def atomic() -> Any:",
        '    """``conn.atomic()``: a transaction (a savepoint when nested)."""',
        "    if conn is None:",
        "        raise NotConnectedError(NOT_CONNECTED_MESSAGE)",
        "    return conn.atomic()",
        "",
        "",
        "def rolling_back() -> Any:",
        '    """``conn.rolling_back()``: like atomic() but always rolled back at exit."""',
        "    if conn is None:",
        "        raise NotConnectedError(NOT_CONNECTED_MESSAGE)",
        "    return conn.rolling_back()",
    ]
    tail = [
        "",
        "",
        "#: every model class, by table name",
        "MODELS_BY_TABLE: dict[str, type[BaseModel]] = {",
        *[f"    {_py(t.name)}: {class_name(t.name)}," for t in sorted(tables, key=_name)],
        "}",
        "",
        "__all__ = [",
        *[f'    "{n}",' for n in _all_sorted(names)],
        "]",
        "",
    ]
    return "\n".join(head + body + tail)


def _name(table: Table) -> str:
    return table.name


def _all_sorted(class_names: list[str]) -> list[str]:
    """``__all__`` in isort order: CONSTANTS, then CamelCase, then lowercase names."""
    extra = [
        "BaseModel", "MODELS_BY_TABLE", "NotConnectedError", "UnsupportedOperationError",
        "ValarLookupError", "ValarTableTypeError", "WriteNotEnabledError", "atomic", "conn",
        "database_proxy", "rolling_back",
    ]

    def key(name: str) -> tuple[int, str]:
        kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
        return kind, name

    return sorted(set(extra) | set(class_names), key=key)


def generate(schema: Path = SCHEMA) -> str:
    return render(parse_schema(schema.read_text(encoding="utf-8")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", type=Path, default=SCHEMA)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if the output is stale")
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")
    ns = parser.parse_args(argv)
    try:
        text = generate(ns.schema)
    except SchemaError as e:
        print(f"gen_model: {e}", file=sys.stderr)
        return 2
    if ns.stdout:
        sys.stdout.write(text)
    elif ns.check:
        current = ns.output.read_text(encoding="utf-8") if ns.output.exists() else ""
        if current != text:
            print(f"{ns.output} is stale: run python scripts/gen_model.py", file=sys.stderr)
            return 1
    else:
        ns.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
