"""The command line: `python -m valarfast` and the `valarfast` script; errors as one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sshd import SshServer, children_of, free_port, sshd_server_fixture  # noqa: F401

from valarfast import cli


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "valarfast", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(json.dumps(cfg))
    return path


def test_info_is_default(valar_db: dict[str, Any], tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.json", valar_db)
    r = run(env={"VALARPY_CONFIG": str(cfg)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1:3] == ["Connecting...", "Connected."]
    assert lines[-1] == "All valarpy queries succeeded."
    r2 = run("info", "--config", str(cfg))
    assert r2.returncode == 0 and r2.stdout.splitlines()[-1] == lines[-1]


def test_console_script(valar_db: dict[str, Any], tmp_path: Path) -> None:
    exe = shutil.which("valarfast")
    assert exe is not None, "the console script is missing: pip install --no-build-isolation -e ."
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "info" in r.stdout and "tunnel" in r.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ('{"database": "x", "pasword": "s3cr3t-value"}', "'pasword'"),
        ('{"database": "x",\n "user": }', "line 2"),
        ('{"user": "kale"}', "'database'"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, content: str | None, expected: str) -> None:
    cfg = tmp_path / "c.json"
    if content is not None:
        cfg.write_text(content)
    r = run("info", "-c", str(cfg))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("valarfast info: error:") and expected in err[0]
    assert "s3cr3t-value" not in r.stderr


def test_server_unreachable_is_one_line(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.json",
        {"database": "x", "host": "127.0.0.1", "port": free_port(), "connect_timeout": 3},
    )
    r = run("info", "-c", str(cfg))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_commands_table_is_lazy_and_complete() -> None:
    assert next(iter(cli.COMMANDS)) == cli.DEFAULT_COMMAND == "info"
    for name, (target, text) in cli.COMMANDS.items():
        assert ":" in target and text, name


@pytest.mark.sshd
def test_tunnel_command(valar_db: dict[str, Any], sshd_server: SshServer, tmp_path: Path) -> None:
    cfg = {
        "database": valar_db["database"],
        "user": valar_db["user"],
        "password": valar_db["password"],
        "remote_bind_host": valar_db["host"],
        "remote_bind_port": valar_db["port"],
        **sshd_server.config(ssh_backend="openssh"),
    }
    path = write_config(tmp_path / "t.json", cfg)
    proc = subprocess.Popen(
        [sys.executable, "-m", "valarfast", "tunnel", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("tunnel up: 127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        port = int(line.split("127.0.0.1:")[1].split()[0])
        ssh_children = children_of(proc.pid)
        assert ssh_children
        conn = pymysql.connect(
            host="127.0.0.1",
            port=port,
            user=cfg["user"],
            password=cfg["password"],
            database=cfg["database"],
        )
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM refs")
            assert cur.fetchall() == (("ref_four",),)
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        for pid in ssh_children:  # the ssh child went with it
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tunnel_command_without_ssh(valar_db: dict[str, Any], tmp_path: Path) -> None:
    r = run("tunnel", "-c", str(write_config(tmp_path / "c.json", valar_db)))
    assert r.returncode == 1 and "no ssh_host" in r.stderr
