"""The backfill benchmark's pure parts (dates, comparing deliveries, the summary and its table, reading the
metadata database) and its small real parts (the nights' feeds side by side, the config, peak memory over
several processes). The run through a real scheduler is CI's ``make bench-backfill-smoke``; nothing here
asserts a timing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import date

import pytest
import yaml

from tfp.config import load_config
from tfp_dev import bench, bench_backfill

DATES = [date(2025, 3, 30), date(2025, 3, 31)]


def test_nights_end_at_the_benchmark_date_and_cross_the_clock_change():
    assert bench_backfill.night_dates(7) == [date(2025, 3, d) for d in range(25, 32)]
    assert bench_backfill.night_dates(1) == [bench.REFERENCE_DATE]
    with pytest.raises(ValueError):
        bench_backfill.night_dates(0)


def test_a_runs_reference_date_is_its_logical_day_in_london():
    # 01:00 London is 01:00 UTC before the clocks go forward (29 March) and 00:00 UTC after
    assert bench_backfill.reference_date("2025-03-29 01:00:00.000000") == date(2025, 3, 29)
    assert bench_backfill.reference_date("2025-03-31 00:00:00+00:00") == date(2025, 3, 31)
    assert bench_backfill.reference_date("2025-03-30T23:30:00+00:00") == date(2025, 3, 31)


def _files(**extra: bytes) -> dict[str, bytes]:
    files = {f"tfp_submission_E09000031_{d:%Y%m%d}.csv": f"rows {d}".encode() for d in DATES}
    files |= {f"tfp_manifest_E09000031_{d:%Y%m%d}.json": f"manifest {d}".encode() for d in DATES}
    return files | extra


def test_identical_deliveries_are_byte_identical():
    result = bench_backfill.compare_deliveries(_files(), _files(), DATES)
    assert result["byte_identical"] is True and result["differing"] == []
    assert result["files_scheduled"] == result["files_tfp_run"] == 4
    assert result["files_per_night"] == {"2025-03-30": 2, "2025-03-31": 2}


def test_a_changed_byte_or_a_missing_file_is_named():
    theirs = _files()
    theirs["tfp_submission_E09000031_20250331.csv"] += b"\n"
    del theirs["tfp_manifest_E09000031_20250330.json"]
    result = bench_backfill.compare_deliveries(_files(extra=b"x"), theirs, DATES)
    assert result["byte_identical"] is False
    assert result["differing"] == ["extra", "tfp_manifest_E09000031_20250330.json",
                                   "tfp_submission_E09000031_20250331.csv"]


def test_a_night_that_delivered_nothing_is_not_identical_even_when_both_agree():
    only_first = {n: b for n, b in _files().items() if "20250330" in n}
    result = bench_backfill.compare_deliveries(only_first, dict(only_first), DATES)
    assert result["differing"] == [] and result["byte_identical"] is False
    assert result["nights_without_delivery"] == ["2025-03-31"]
    assert bench_backfill.compare_deliveries({}, {}, DATES)["byte_identical"] is False


def _doc(identical: bool = True) -> dict:
    runs = [{"duration_s": 100.0}, {"duration_s": 120.0}, {"duration_s": 90.0}]
    manual = [{"wall_s": 20.0}, {"wall_s": 22.0}, {"wall_s": 30.0}]
    dates = bench_backfill.night_dates(3)
    comparison = bench_backfill.compare_deliveries(_files(), _files() if identical else {}, DATES)
    stages = {"scheduled": bench.stage_times([("police.validate", 30.0), ("link", 3.0)]),
              "tfp_run": bench.stage_times([("police.validate", 5.0)])}
    summary = bench_backfill.summarise(dates, runs, manual, 330.0, stages, 2048.0, comparison)
    return {"command": "python -m tfp_dev.bench_backfill --nights 3 --families 100", "created": "2026-12-02T09:00:00",
            "machine": {"cpus": 2, "memory_gb": 8.0, "platform": "Linux", "python": "3.11",
                        "load_average_at_start": [1.0, 1.0, 1.0], "load_average_at_end": [2.0, 2.0, 2.0]},
            "families": 100, "shape": {"name": "issue17", "description": "8 sources"}, "summary": summary,
            "backfill": {"parallelism": 4}, "notes": ["other work ran beside it"]}


def test_summary_spreads_and_a_labelled_extrapolation():
    s = _doc()["summary"]
    assert s["nights"] == 3 and s["first_date"] == "2025-03-29" and s["last_date"] == "2025-03-31"
    assert s["per_night_s"] == {"median": 100.0, "min": 90.0, "max": 120.0, "n": 3}
    assert s["tfp_run_per_night_s"] == {"median": 22.0, "min": 20.0, "max": 30.0, "n": 3}
    ext = s["extrapolated_365_nights"]
    assert ext["extrapolated"] is True and ext["seconds"] == 36500.0 and "not measured" in ext["method"]
    assert ext["from_total_s"] == pytest.approx(330.0 / 3 * 365)
    assert s["byte_identical"] is True and s["stages_s"]["scheduled"]["validate"] == 30.0


def test_table_names_the_command_the_figures_and_what_differs():
    table = bench_backfill.render_markdown(_doc())
    assert "`python -m tfp_dev.bench_backfill --nights 3 --families 100`" in table
    assert "| scheduled night (dag_run end − start) | 100.0 (90.0–120.0) |" in table
    assert "| byte-identical | yes |" in table and "**extrapolated**" in table and "36500 s" in table
    assert "| validate | 30.0 | 5.0 |" in table and "2048 MB" in table
    assert "up to 4 tasks run at once" in table and "- other work ran beside it" in table
    differs = bench_backfill.render_markdown(_doc(identical=False))
    assert "| byte-identical | NO (4 differing: tfp_manifest_E09000031_20250330.json" in differs


def test_runs_and_task_instances_are_read_from_the_metadata_database(tmp_path):
    db = tmp_path / "airflow.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE dag_run (dag_id, run_id, run_type, state, logical_date, start_date, end_date)")
    con.execute("CREATE TABLE task_instance (dag_id, run_id, task_id, duration, state)")
    con.executemany("INSERT INTO dag_run VALUES (?, ?, ?, ?, ?, ?, ?)", [
        ("tfp_nightly", "b2", "backfill", "running", "2025-03-31 00:00:00.000000", "2026-12-02 09:01:40.5", None),
        ("tfp_nightly", "b1", "backfill", "success", "2025-03-30 00:00:00.000000", "2026-12-02 09:00:00.000000",
         "2026-12-02 09:01:40.000000"),
        ("tfp_retention", "r", "scheduled", "success", "2025-03-30 00:00:00", "2026-12-02 09:00:00", None)])
    con.executemany("INSERT INTO task_instance VALUES (?, ?, ?, ?, ?)", [
        ("tfp_nightly", "b1", "police.validate", 3.5, "success"), ("tfp_retention", "r", "sweep", 1.0, "success")])
    con.commit()
    con.close()
    runs = bench_backfill.dag_runs(db)
    assert [(r["run_id"], r["reference_date"], r["duration_s"]) for r in runs] == [
        ("b1", "2025-03-30", 100.0), ("b2", "2025-03-31", None)]
    assert runs[0]["start"] == "2026-12-02T09:00:00+00:00"
    assert bench_backfill.task_instances(db) == [("b1", "police.validate", 3.5, "success")]


def test_the_nights_feeds_lie_side_by_side_without_the_truth(tmp_path):
    shape = bench.SHAPES["issue17"]
    inbound = bench_backfill.nightly_feeds(tmp_path, 12, 5, shape, DATES)
    names = sorted(str(p.relative_to(inbound)) for p in inbound.rglob("*.csv"))
    assert not any(n.startswith("truth") for n in names)
    for day in DATES:
        assert f"children_services/families_{day:%Y%m%d}.csv" in names
        assert f"housing/peabody/tenancy_events_{day:%Y%m%d}.csv" in names
        assert f"health/treatment_episodes_{day:%Y%m%d}.csv" in names
    assert len(names) == 2 * len([n for n in names if "20250331" in n])
    again = bench_backfill.nightly_feeds(tmp_path, 12, 5, shape, DATES)  # kept, not made again
    assert again == inbound and sorted(str(p.relative_to(inbound)) for p in again.rglob("*.csv")) == names

    config_path = bench_backfill.run_config(tmp_path / "run", inbound, shape)
    raw = yaml.safe_load(config_path.read_text())
    assert raw["delivery"] == {"transport": "directory", "path": "delivered", "encryption": "none"}
    assert raw["inbound"] == {"keep_local_files": True}  # both runs read the one drop folder
    config = load_config(config_path)
    assert [p.id for p in config.partners("housing")] == ["clarion", "peabody", "hyde"]


def test_peak_memory_adds_up_several_process_trees():
    hold = "import time; x = bytearray(60_000_000); x[::4096] = b'1' * len(x[::4096]); time.sleep(30)"
    procs = [subprocess.Popen([sys.executable, "-c", hold]) for _ in range(2)]
    try:
        time.sleep(1.5)
        with bench.PeakRss(procs[0].pid, interval=0.05) as one:
            time.sleep(0.5)
        with bench.PeakRss([p.pid for p in procs], interval=0.05) as both:
            time.sleep(0.5)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert one.peak > 60_000_000
    assert both.peak > 1.8 * one.peak
