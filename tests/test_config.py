"""Config sources and their errors (no server needed)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from valarfast.config import (
    ENV_VAR,
    Settings,
    find_extant_path,
    get_preferred_paths,
    load_settings,
)
from valarfast.connection import Valar

SECRET = "hunter2-very-secret"
BASE: dict[str, Any] = {"database": "valar", "user": "kale", "password": SECRET, "port": 3306}


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def test_mapping_is_copied_never_mutated() -> None:
    cfg = dict(BASE, ssh_host="h", ssh_password="p")
    before = dict(cfg)
    s = load_settings(cfg)
    assert cfg == before
    assert s.database == "valar" and s.engine == "mysql"
    assert s.driver == {"user": "kale", "password": SECRET, "port": 3306}
    assert s.ssh is not None and s.ssh.host == "h" and s.ssh.remote_port == 3306
    with pytest.raises(TypeError):
        s.driver["user"] = "x"  # type: ignore[index]


def test_settings_are_frozen() -> None:
    s = load_settings(BASE)
    with pytest.raises(AttributeError):
        s.database = "other"  # type: ignore[misc]


def test_from_str_and_path(tmp_path: Path) -> None:
    p = write(tmp_path / "c.json", BASE)
    assert load_settings(str(p)).database == "valar"
    assert load_settings(p).source == p


def test_list_of_paths_first_extant(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", dict(BASE, database="first"))
    b = write(tmp_path / "b.json", dict(BASE, database="second"))
    assert load_settings([None, tmp_path / "nope.json", a, b]).database == "first"
    assert load_settings([str(b), a]).database == "second"


def test_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path / "env.json", dict(BASE, database="fromenv"))
    monkeypatch.setenv(ENV_VAR, str(p))
    assert load_settings(None).database == "fromenv"
    assert Valar().settings.database == "fromenv"


def test_env_var_unset_or_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=re.escape(ENV_VAR)):
        Valar()
    with pytest.raises(LookupError):  # valarpy 3's tests expect a LookupError here
        Valar()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "asd346erfdgawq046j54e4y"))
    with pytest.raises(FileNotFoundError, match="asd346erfdgawq046j54e4y"):
        Valar()


def test_not_found_names_every_path(tmp_path: Path) -> None:
    paths = [tmp_path / "one.json", None, tmp_path / "two.json"]
    with pytest.raises(FileNotFoundError) as err:
        load_settings(paths)
    assert "one.json" in str(err.value) and "two.json" in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"three\.json"):
        load_settings(tmp_path / "three.json")


def test_folder_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_settings(tmp_path)


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    text = '{\n  "database": "valar",\n  "password": "' + SECRET + '"\n  "user": 1\n}'
    p = write(tmp_path / "bad.json", text)
    with pytest.raises(ValueError) as err:
        load_settings(p)
    msg = str(err.value)
    assert "bad.json" in msg and "line 4" in msg
    assert SECRET not in msg


@pytest.mark.parametrize("bad", [3, 2.5, b"{}", object(), [1, 2]])
def test_wrong_type(bad: Any) -> None:
    with pytest.raises(TypeError):
        load_settings(bad)


def test_json_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON object"):
        load_settings(write(tmp_path / "list.json", [1, 2]))


def test_missing_database() -> None:
    with pytest.raises(ValueError, match="'database'"):
        load_settings({"user": "kale"})


def test_unknown_key_named_with_hint() -> None:
    with pytest.raises(ValueError) as err:
        load_settings({"database": "valar", "pasword": SECRET})
    assert "'pasword'" in str(err.value) and "'password'" in str(err.value)
    assert SECRET not in str(err.value)


def test_wrong_value_type_never_shows_value() -> None:
    with pytest.raises(TypeError, match="'port'"):
        load_settings(dict(BASE, port="3306"))
    with pytest.raises(TypeError) as err:
        load_settings(dict(BASE, password=12345678))
    assert "12345678" not in str(err.value)
    with pytest.raises(TypeError):
        load_settings(dict(BASE, port=True))


def test_choices_checked() -> None:
    with pytest.raises(ValueError, match="engine"):
        load_settings(dict(BASE, engine="postgres"))
    with pytest.raises(ValueError, match="ssh_backend"):
        load_settings(dict(BASE, ssh_host="h", ssh_backend="putty"))
    with pytest.raises(ValueError, match="ssh_host"):
        load_settings(dict(BASE, ssh_user="me"))
    with pytest.raises(ValueError, match="ssh_password"):
        load_settings(dict(BASE, ssh_host="h", ssh_backend="openssh", ssh_password="x"))


def test_aliases() -> None:
    s = load_settings({"db": "valar", "passwd": SECRET, "ssh_host": "h", "ssh_username": "u"})
    assert s.database == "valar" and s.driver["password"] == SECRET
    assert s.ssh is not None and s.ssh.user == "u"


def test_passwords_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = load_settings(
        dict(BASE, ssh_host="h", ssh_password=SECRET + "ssh", ssh_pkey_password=SECRET + "pk")
    )
    v = Valar(s)
    for text in (repr(s), str(s), repr(s.ssh), repr(v), caplog.text):
        assert SECRET not in text
    assert "******" in repr(s)


def test_preferred_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(ENV_VAR, "/x/y.json")
    paths = get_preferred_paths()
    assert paths == Valar.get_preferred_paths()
    assert paths[0] == Path("/x/y.json")
    assert [str(p.relative_to(tmp_path)) for p in paths[1:] if p is not None] == [
        ".sauronlab/connection.json",
        ".valarpy/connection.json",
        ".valarpy/config.json",
        ".valarpy/read_only.json",
    ]
    monkeypatch.delenv(ENV_VAR)
    assert get_preferred_paths()[0] is None
    write_to = tmp_path / ".valarpy"
    write_to.mkdir()
    found = write(write_to / "config.json", BASE)
    assert Valar.find_extant_path(*get_preferred_paths()) == found


def test_find_extant_path(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", BASE)
    assert find_extant_path(None, str(tmp_path / "no"), a) == a
    with pytest.raises(FileNotFoundError):
        find_extant_path(None, None)


def test_construction_touches_no_network() -> None:
    v = Valar({"database": "valar", "host": "192.0.2.1", "port": 1, "ssh_host": "192.0.2.2"})
    assert not v.is_open and v.tunnel is None


def test_settings_pass_through() -> None:
    s = load_settings(BASE)
    assert load_settings(s) is s
    assert isinstance(s, Settings)
