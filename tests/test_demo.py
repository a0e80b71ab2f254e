"""``valarfast demo`` end to end (a subprocess, as a user runs it) and its bad inputs."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import valarfast
from valarfast import cli, metamodel, model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = ["--runs", "2", "--frames", "300"]


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "valarfast", "demo", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def marker(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, value FROM valarfast_meta").fetchall())
    finally:
        conn.close()


def test_demo_end_to_end(tmp_path: Path) -> None:
    data_home = tmp_path / "xdg"
    png = tmp_path / "plots" / "mi.png"
    first = run_demo(*SMALL, "--plot", str(png), env={"XDG_DATA_HOME": str(data_home)})
    assert first.returncode == 0, first.stderr
    out = first.stdout.splitlines()
    path = data_home / "valarfast" / "sandbox.sqlite"  # the documented default
    assert out[0].startswith(f"sandbox Valar (SQLite) at {path}: 2 runs x 96 wells x 300 frames")
    assert "built in" in out[0]
    assert out[1].startswith("fetched feature 'MI' of 2 runs: 192 wells x 300 frames")
    assert "valarfast.batch.well_features" in out[2] and "valarpy + sauronlab" in out[3]
    assert "same values bit for bit" in out[4]
    assert out[5] == f"heat map of MI per well over time: {png}"
    assert any("ssh -L" in line for line in out) and any("connection.json" in line for line in out)
    assert first.stderr.strip() == "" or "numpy fallback" in first.stderr

    # the picture: a real PNG of the figure's size
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (600, 1000) and np.ptp(image[..., :3]) > 0.5

    # the file: a sandbox with its marker, as many well-feature rows as wells
    mark = marker(path)
    assert json.loads(mark["sandbox"])["frames"] == 300
    assert mark["valarfast_version"] == valarfast.__version__
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM well_features").fetchone() == (192,)
    conn.close()

    # a second run reuses it and writes nothing
    before = digest(path)
    second = run_demo("--path", str(path))
    assert second.returncode == 0, second.stderr
    assert "(reused, built" in second.stdout.splitlines()[0]
    assert digest(path) == before


# --- bad input: one line, exit 1, nothing overwritten without --force ----------------------------


@pytest.fixture(autouse=True)
def restore_binding() -> Iterator[None]:
    previous = metamodel.database_proxy.obj, model.conn
    yield
    metamodel.database_proxy.initialize(previous[0])
    model.conn = previous[1]


def demo(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["demo", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1
    lines = [line for line in err.splitlines() if "numpy fallback" not in line and line.strip()]
    assert len(lines) == 1 and lines[0].startswith("valarfast demo: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture()
def built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "sandbox.sqlite"
    code, _, err = demo(capsys, "--path", str(path), "--runs", "1", "--frames", "50")
    assert code == 0, err
    return path


def test_not_a_sqlite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my precious notes\n")
    code, _, err = demo(capsys, "--path", str(path), "--frames", "50")
    assert_one_line_error(code, err, "is not a SQLite file", "--force")
    assert path.read_text() == "my precious notes\n"
    code, _, err = demo(capsys, "--path", str(path), "--frames", "50", "--runs", "1", "--force")
    assert code == 0, err
    assert json.loads(marker(path)["sandbox"])["frames"] == 50


def test_a_sqlite_database_that_is_not_a_sandbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    before = digest(path)
    code, _, err = demo(capsys, "--path", str(path))
    assert_one_line_error(code, err, "not a valarfast sandbox", "--force")
    assert digest(path) == before


def test_a_sandbox_of_another_version(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = sqlite3.connect(built)
    conn.execute("UPDATE valarfast_meta SET value = '0.0.9' WHERE key = 'valarfast_version'")
    conn.commit()
    conn.close()
    before = digest(built)
    code, _, err = demo(capsys, "--path", str(built))
    assert_one_line_error(
        code, err, "built by valarfast 0.0.9", f"this is valarfast {valarfast.__version__}",
        "--force",
    )  # fmt: skip
    assert digest(built) == before
    code, out, err = demo(capsys, "--path", str(built), "--force", "--frames", "40", "--runs", "1")
    assert code == 0, err
    assert marker(built)["valarfast_version"] == valarfast.__version__
    assert "1 runs x 96 wells x 40 frames" in out


def test_a_sandbox_of_another_size(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = digest(built)
    code, _, err = demo(capsys, "--path", str(built), "--frames", "60")
    assert_one_line_error(code, err, "1 runs x 50 frames, not 60 frames", "--force")
    assert digest(built) == before


@pytest.mark.parametrize("where", ["under a file", "under /proc"])
def test_unwritable_path(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = blocker / "s.sqlite" if where == "under a file" else Path("/proc/vf-nope/s.sqlite")
    code, _, err = demo(capsys, "--path", str(path), "--frames", "50")
    assert_one_line_error(code, err, f"cannot write the sandbox at {path}")
    assert blocker.read_text() == "x" and not path.exists()


BAD_OPTIONS = {
    "folder": (["--path", "{tmp}"], "names a folder"),
    "no frames": (["--frames", "0"], "--frames must be at least 10"),
    "no runs": (["--runs", "0"], "--runs must be at least 1"),
    "huge": (["--runs", "1000", "--frames", "1000000"], "too large"),
    "pdf": (["--plot", "{tmp}/x.pdf"], "--plot wants a .png"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    args, needle = BAD_OPTIONS[case]
    target = tmp_path / "s.sqlite"
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--path" not in argv:
        argv += ["--path", str(target)]
    code, _, err = demo(capsys, *argv)
    assert_one_line_error(code, err, needle)
    assert not target.exists()


def test_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like
    target = tmp_path / "s.sqlite"
    code, _, err = demo(capsys, "--path", str(target), "--plot", str(tmp_path / "p.png"))
    assert_one_line_error(code, err, "matplotlib is needed for --plot", "valarfast[plot]")
    assert not target.exists()  # checked before anything is built


def test_valarpy_way_and_batch_agree_on_the_sandbox(built: Path) -> None:
    from valarfast import batch
    from valarfast import demo as demo_module
    from valarfast.connection import Valar

    with Valar({"database": str(built), "engine": "sqlite"}):
        runs = [r.id for r in model.Runs.select()]
        old, wells = demo_module.valarpy_way(runs, "MI")
        m = batch.well_features(runs=runs, feature="MI")
    assert old.shape == m.values.shape == (96, 50)
    assert (old.view(np.uint32) == m.values.view(np.uint32)).all()
    assert wells.tolist() == m.well_ids.tolist()
