"""The command line as a new user meets it: a wrong input is one line saying what is wrong and one saying
what to do, exit 2, never a traceback (issues 14 and 16).

The commands run in this process through ``tfp.cli.main`` (an exception that is not a TfpError would
fail the test as a traceback would reach the user); one case per kind runs the real ``tfp`` script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_config
from tfp import cli
from tfp.warehouse import head_revision

TFP = str(Path(sys.executable).with_name("tfp"))
# every command that reads a config: the rest of each command line is valid
CONFIG_COMMANDS = {
    "run": ["run", "--date", "2025-03-31"],
    "retention": ["retention", "--date", "2025-03-31"],
    "retention --dry-run": ["retention", "--date", "2025-03-31", "--dry-run"],
    "airflow": ["airflow", "--port", "18080"],
    "db upgrade": ["db", "upgrade"],
}


def _config(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A --config a new user might give, and the words the one-line error must hold."""
    path = tmp_path / "tfp.yaml"
    if kind == "missing":
        return path, "config file not found"
    if kind == "a folder":
        path.mkdir()
        return path, "is not a file"
    if kind == "not YAML":
        path.write_text("local_authority:\n  code: [E09000031\n", encoding="utf-8")
        return path, "is not valid YAML at line"
    if kind == "empty":
        path.write_text("", encoding="utf-8")
        return path, "is empty, not a YAML mapping"
    if kind == "a list":
        path.write_text("- E09000031\n", encoding="utf-8")
        return path, "is a list, not a YAML mapping"
    if kind == "not text":
        path.write_bytes(b"\xff\xfe\x00\x01 binary")
        return path, "is not UTF-8 text"
    if kind == "another program's":
        path.write_text("la_code: E09000031\nname: Test\n", encoding="utf-8")
        return path, "required keys missing"
    if kind == "a wrong value":
        config = write_config(tmp_path, "sqlite:///work/warehouse.db")
        config.write_text(config.read_text(encoding="utf-8").replace("E09000031", "Camden"), encoding="utf-8")
        return config, "local_authority.code"
    if kind == "unreadable (EIO)":
        return Path("/proc/self/mem"), "cannot be read"
    raise AssertionError(kind)


KINDS = ["missing", "a folder", "not YAML", "empty", "a list", "not text", "another program's", "a wrong value",
         "unreadable (EIO)"]


def _one_line_error(capsys, argv: list[str]) -> tuple[str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 2 and lines[0].startswith("tfp: ") and lines[1].startswith("  what to do: "), err
    assert "Traceback" not in err + out
    return lines[0], lines[1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_every_config_command_says_in_one_line_what_is_wrong_with_the_config(tmp_path, capsys, command, kind):
    path, words = _config(tmp_path, kind)
    args = CONFIG_COMMANDS[command]
    argv = [*args[:2], "--config", str(path), *args[2:]] if args[0] == "db" else [args[0], "--config", str(path),
                                                                                     *args[1:]]
    error, hint = _one_line_error(capsys, argv)
    assert words in error, error
    assert ("/mem" if kind == "unreadable (EIO)" else str(path.resolve())) in error, error  # names the file


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: permission denied cannot happen")
def test_a_config_the_user_may_not_read(tmp_path, capsys):
    path = write_config(tmp_path, "sqlite:///work/warehouse.db")
    path.chmod(0)
    error, hint = _one_line_error(capsys, ["db", "upgrade", "--config", str(path)])
    assert "permission denied" in error and "may read" in hint


def test_the_hint_of_a_missing_config_points_at_the_example_that_exists():
    """The hint names the example config by a path that exists, in a checkout or an installed wheel."""
    from tfp.config import EXAMPLE, ConfigError, load_config

    with pytest.raises(ConfigError) as raised:
        load_config("no-such-file.yaml")
    assert str(EXAMPLE) in raised.value.hint and EXAMPLE.is_file()


def test_the_real_script_prints_no_traceback_for_a_missing_config(tmp_path):
    done = subprocess.run([TFP, "run", "--config", "tfp.yaml", "--date", "2025-03-31"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    error, hint = done.stderr.splitlines()
    assert error == f"tfp: config file not found: {tmp_path.resolve() / 'tfp.yaml'}"
    assert hint.startswith("  what to do: give --config the path of your config file")


# -- tfp keys ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["under a file", "a file", "under /proc", "under /dev/null"])
def test_keys_into_an_impossible_folder_is_one_line(tmp_path, capsys, where):
    (tmp_path / "notes.txt").write_text("x\n", encoding="utf-8")
    out = {"under a file": tmp_path / "notes.txt" / "keys", "a file": tmp_path / "notes.txt",
           "under /proc": Path("/proc/no-such-folder/keys"), "under /dev/null": Path("/dev/null/keys")}[where]
    modes = {p: os.stat(p).st_mode for p in (tmp_path / "notes.txt", Path("/dev/null"))}
    error, hint = _one_line_error(capsys, ["keys", "--out", str(out)])
    assert error.startswith(f"tfp: cannot write the keys into {out}: "), error
    assert "folder you can write to" in hint
    assert not list(tmp_path.glob("**/*.key"))
    assert {p: os.stat(p).st_mode for p in modes} == modes  # a file or device in the way is never chmod-ed


def test_the_real_keys_script_prints_no_traceback(tmp_path):
    done = subprocess.run([TFP, "keys", "--out", "/proc/no-such-folder/keys"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 2, done.stderr
    assert "Traceback" not in done.stderr and not done.stdout


# -- an unmigrated warehouse ------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["retention", "retention --dry-run", "run"])
def test_an_unmigrated_warehouse_is_one_line_naming_tfp_db_upgrade(tmp_path, capsys, keys_env, real_connect,
                                                                   pg_url, command):
    """Before Airflow starts (no task log, no 'No tasks to run'): the schema, and the command with this config.
    ``tfp run`` migrates an embedded SQLite warehouse itself, so PostgreSQL is the case for both."""
    config = write_config(tmp_path, pg_url)
    args = CONFIG_COMMANDS[command]
    error, hint = _one_line_error(capsys, [args[0], "--config", str(config), *args[1:]])
    assert error == f"tfp: the warehouse schema is empty, not {head_revision()}; run `tfp db upgrade --config {config}`"
    assert "warehouse's owner" in hint
    assert not (tmp_path / "work" / "airflow").exists()  # refused before an Airflow home was made


def test_retention_on_a_new_sqlite_warehouse_names_tfp_db_upgrade(tmp_path, capsys, keys_env, real_connect):
    config = write_config(tmp_path, "sqlite:///work/warehouse.db")
    (tmp_path / "work").mkdir()
    error, _ = _one_line_error(capsys, ["retention", "--config", str(config), "--date", "2025-03-31"])
    assert f"run `tfp db upgrade --config {config}`" in error


def test_retention_on_a_newer_warehouse_says_to_upgrade_tfp(tmp_path, capsys, keys_env, sqlite_url):
    from sqlalchemy import text

    from tfp import warehouse

    warehouse.upgrade(sqlite_url)
    with warehouse.get_engine(sqlite_url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    config = write_config(tmp_path, sqlite_url)
    error, hint = _one_line_error(capsys, ["retention", "--config", str(config), "--date", "2025-03-31"])
    assert "newer than this tfp (9999" in error and "tfp release" in hint


def test_output_piped_into_a_reader_that_stops_early_is_no_traceback(tmp_path):
    """`tfp keys --out k | head -1`: the keys are written; the closed pipe is not a crash."""
    done = subprocess.run(f"{TFP} keys --out {tmp_path / 'k'} | head -c 0", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert (tmp_path / "k" / "age.pub").is_file()
