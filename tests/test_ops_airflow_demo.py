"""Issue 14 item 1: ``make airflow`` generates a demo borough the first time and reuses it after
(``scripts/airflow_demo.py``'s ``prepare``, with the real ``tfp generate`` and ``tfp keys``); the files are
dated for the night the scheduler runs first. The Airflow it then starts is ``tfp airflow``, proved by
tests/test_ops_local_airflow.py."""

from __future__ import annotations

import importlib.util
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tfp.config import load_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "airflow_demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("airflow_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_first_scheduled_night_is_the_latest_complete_0100_london_interval(demo):
    london = ZoneInfo("Europe/London")
    assert demo.first_scheduled_night(datetime(2025, 3, 31, 0, 59, tzinfo=london)) == "2025-03-29"
    assert demo.first_scheduled_night(datetime(2025, 3, 31, 1, 0, tzinfo=london)) == "2025-03-30"
    assert demo.first_scheduled_night(datetime(2025, 3, 31, 23, 0, tzinfo=ZoneInfo("UTC"))) == "2025-03-30"  # 00:00 BST on 1 April


def test_make_airflow_generates_a_demo_borough_once_and_reuses_it(demo, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "FAMILIES", 20)  # the generator's size, not its path, is what this test shortens
    before_night = demo.first_scheduled_night()
    config, night = demo.prepare(tmp_path)
    assert night in {before_night, demo.first_scheduled_night()}  # (a start across 01:00 London may move it)
    assert (tmp_path / "NIGHT").read_text().strip() == night
    loaded = load_config(config)
    assert loaded.local_authority.code == "E09000031" and loaded.delivery.encryption == "age"
    stamp = night.replace("-", "")
    assert (tmp_path / "partners" / "children_services" / f"families_{stamp}.csv").exists()
    assert (tmp_path / "truth").is_dir() and not (tmp_path / "partners" / "truth").exists()
    for name in ("pseudonym.key", "linkage.key", "signing.key", "age.key"):
        assert (tmp_path / "keys" / name).stat().st_mode & 0o777 == 0o600, name
    before = {p: p.stat().st_mtime_ns for p in (config, tmp_path / "keys" / "signing.key", tmp_path / "NIGHT")}
    assert demo.prepare(tmp_path) == (config, night)  # a second start reuses everything
    assert {p: p.stat().st_mtime_ns for p in before} == before
