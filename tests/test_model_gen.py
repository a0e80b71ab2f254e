"""scripts/gen_model.py on small schemas: names, types, backrefs, and what it refuses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gen_model  # noqa: E402

sys.path.remove(str(ROOT / "scripts"))

TWO_TABLES = """
-- a comment with a CREATE TABLE `nope` (`x` int);
CREATE TABLE `people` (
  `id` smallint(5) unsigned not null auto_increment,
  `name` varchar(20) not null,
  `mood` enum('it''s fine', 'bad') not null default 'bad',
  `mother_id` smallint(5) unsigned default null,
  `father_id` smallint(5) unsigned default null,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name_unique` (`name`),
  KEY `name` (`name`),
  CONSTRAINT `a` FOREIGN KEY (`mother_id`) REFERENCES `people` (`id`) ON DELETE SET NULL,
  CONSTRAINT `b` FOREIGN KEY (`father_id`) REFERENCES `people` (`id`)
) ENGINE=InnoDB;

CREATE TABLE `pet_photos` (
  `id` int(10) unsigned not null auto_increment,
  `owner_id` smallint(5) unsigned not null,
  `sha1` binary(20) not null,
  `data` longblob not null,
  `weight` double unsigned default 1.5,
  `n` mediumint(9) not null default 0,
  PRIMARY KEY (`id`),
  UNIQUE KEY `owner_sha1` (`owner_id`, `sha1`),
  CONSTRAINT `c` FOREIGN KEY (`owner_id`) REFERENCES `people` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB;
"""


def _render(sql: str) -> str:
    return gen_model.render(gen_model.parse_schema(sql))


def test_small_schema_renders_and_runs() -> None:
    text = _render(TWO_TABLES)
    assert "class People(BaseModel):" in text and "class PetPhotos(BaseModel):" in text
    assert "nope" not in text
    assert text.index("class People(") < text.index("class PetPhotos(")  # referenced first
    assert "mother = ForeignKeyField('self', column_name='mother_id'" in text
    assert "backref='people_mother_set'" in text and "backref='people_father_set'" in text
    assert "on_delete='SET NULL'" in text and "on_delete='CASCADE'" in text
    assert "choices=(\"it's fine\", 'bad'), default='bad'" in text
    assert "sha1 = BinaryField(max_length=20)" in text
    assert "weight = UnsignedDoubleField(null=True, default=1.5" in text
    assert "n = MediumIntegerField(default=0" in text
    assert "(('owner', 'sha1'), True)" in text
    assert "(('name',), False)" not in text  # same columns as the unique key: left out
    namespace: dict[str, object] = {}
    exec(compile(text, "<generated>", "exec"), namespace)  # the output is valid, importable code
    people = namespace["People"]
    assert people._meta.fields["name"].unique  # type: ignore[attr-defined]
    assert people._meta.fields["mood"].choices == ("it's fine", "bad")  # type: ignore[attr-defined]


def test_output_is_deterministic() -> None:
    assert _render(TWO_TABLES) == _render(TWO_TABLES)
    assert gen_model.generate() == gen_model.generate()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("CREATE TABLE `t` (\n  `id` int(10) unsigned not null auto_increment,\n"
         "  `g` geometry not null,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;", "unsupported type"),
        ("CREATE TABLE `t` (\n  `id` int(10) unsigned not null auto_increment,\n"
         "  `save` int not null,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;", "taken"),
        ("CREATE TABLE `t` (\n  `id` int(10) unsigned not null auto_increment,\n"
         "  `x_id` int(10) unsigned not null,\n  PRIMARY KEY (`id`),\n"
         "  CONSTRAINT `c` FOREIGN KEY (`x_id`) REFERENCES `missing` (`id`)\n) ENGINE=InnoDB;",
         "unknown tables"),
        ("CREATE TABLE `t` (\n  `id` char(3) not null,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;",
         "unsupported primary key"),
        ("CREATE TABLE `t` (\n  `id` int(10) unsigned not null auto_increment,\n"
         "  FULLTEXT KEY `f` (`id`)\n) ENGINE=InnoDB;", "cannot parse"),
        ("nothing here", "no CREATE TABLE"),
    ],
)
def test_refuses_what_it_cannot_map(sql: str, message: str) -> None:
    with pytest.raises(gen_model.SchemaError, match=message):
        _render(sql)


def test_field_name_clash_with_id_accessor() -> None:
    sql = TWO_TABLES.replace("`n` mediumint(9)", "`owner` mediumint(9)")
    with pytest.raises(gen_model.SchemaError, match="owner"):
        _render(sql)


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    out = tmp_path / "model.py"
    assert gen_model.main(["--output", str(out)]) == 0
    assert gen_model.main(["--output", str(out), "--check"]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert gen_model.main(["--output", str(out), "--check"]) == 1
