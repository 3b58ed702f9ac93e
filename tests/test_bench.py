"""The benchmark's pure parts (statistics, stage grouping, F1, the table, the artefacts' shape) and, marked
slow, a small end-to-end smoke run of ``python -m tfp_dev.bench``. Nothing here asserts a timing."""

from __future__ import annotations

import json
from datetime import date

import pytest

from tfp.validate import read_feed, validate_feed
from tfp_dev import bench


def test_spread_is_the_median_with_its_range():
    assert bench.spread([3.0, 1.0, 10.0]) == {"median": 3.0, "min": 1.0, "max": 10.0, "n": 3}
    assert bench.spread([2.0, 4.0]) == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 2}
    assert bench.spread([None, 5]) == {"median": 5.0, "min": 5.0, "max": 5.0, "n": 1}
    assert bench.spread([]) is None


def test_task_instances_add_up_per_stage():
    tis = [("check_setup", 1.5), ("choose_sources", 0.5), ("police.extract", 1.0), ("dwp.extract", 0.5), ("police.validate", 3.0),
           ("housing.clarion.validate", 0.5), ("housing.hyde.validate", 0.25), ("schools.stage", 4.0),
           ("check_inputs", 0.25), ("link", 5.0), ("feedback", 0.75), ("report", None)]
    times = bench.stage_times(tis)
    assert list(times) == list(bench.STAGES)
    assert times["setup"] == 2.25 and times["extract"] == 1.5 and times["validate"] == 3.75
    assert times["feedback"] == 0.75
    assert times["stage"] == 4.0 and times["link"] == 5.0 and times["report"] == 0.0 and times["criteria"] == 0.0


def test_f1_counts_wrong_links_and_missed_pairs():
    truth = {"a": "P1", "b": "P2", "c": "P3", "d": "P4"}
    predicted = {"a": "P1", "b": "P2", "c": "P9", "d": None, "x": "P5"}  # c wrong, d missed, x not on roster
    score = bench.f1_score(predicted, truth)
    assert score["links"] == 4 and score["true_pairs"] == 4
    assert score["precision"] == pytest.approx(0.5) and score["recall"] == pytest.approx(0.5)
    assert score["f1"] == pytest.approx(0.5)
    assert bench.f1_score({}, truth)["f1"] == 0.0


def _run(wall: float, link: float, ok: bool = True) -> dict:
    stages = dict.fromkeys(bench.STAGES, 1.0) | {"link": link}
    return {"succeeded": ok, "wall_s": wall, "night_s": wall - 5, "peak_rss_mb": 900.0, "rows_per_s": 1000 / wall,
            "input_rows": 1000, "stages_s": stages,
            "splink": {"ratio": link / 10, "seconds": 10.0, "f1_tfp": 0.99, "f1_splink": 0.95},
            "pandas": {"stage_ratio": 8.0, "gx_ratio": 5.0, "pandas_s": 1.0, "gx_s": 5.0, "same_quarantine": True}}


def _doc() -> dict:
    small = [_run(10, 4), _run(12, 5), _run(11, 3), _run(99, 99, ok=False)]
    large = [_run(50, 20), _run(48, 18), _run(52, 22)]
    results = [{"families": 100, "input_rows": 1000, "runs": small, "summary": bench.summarise(small)},
               {"families": 500, "input_rows": 5000, "runs": large, "summary": bench.summarise(large)}]
    return {"schema": bench.SCHEMA_VERSION, "command": "python -m tfp_dev.bench --sizes 100 500", "created": "2025-04-01T00:00:00",
            "machine": {"cpus": 2, "memory_gb": 8.0, "platform": "Linux", "python": "3.11"}, "results": results,
            "scaling": bench.scaling(results), "notes": ["a note"]}


def test_summary_takes_medians_of_successful_runs_only():
    s = bench.summarise([_run(10, 4), _run(12, 5), _run(11, 3), _run(99, 99, ok=False)])
    assert s["repeats"] == 3
    assert s["wall_s"] == {"median": 11.0, "min": 10.0, "max": 12.0, "n": 3}
    assert s["stages_s"]["link"]["median"] == 4.0
    assert s["link_vs_splink"]["median"] == pytest.approx(0.4)
    assert s["same_quarantine"] is True
    assert bench.scaling(_doc()["results"]) == {"100->500": pytest.approx(50 / 11)}


def test_table_names_the_command_machine_sizes_and_ratios():
    table = bench.render_table(_doc())
    assert "`python -m tfp_dev.bench --sizes 100 500`" in table and "2 CPUs" in table
    assert "| 100 | 1,000 | 3 | 11.0 (10.0–12.0) |" in table
    assert "| 500 | 5,000 | 3 | 50.0 (48.0–52.0) |" in table
    assert "link ÷ Splink" in table and "0.40 (0.30–0.50)" in table
    assert "100 → 500 families ×4.55" in table
    assert "time_per_stage.png" in table
    before = bench.render_table(_doc(), before=_doc())
    assert "Before and after" in before and "| 100 | 11.0 | 11.0 |" in before


def test_the_three_artefacts_are_written_and_well_formed(tmp_path):
    paths = bench.write_outputs(_doc(), tmp_path)
    assert [p.name for p in paths] == ["results.json", "results.md", "time_per_stage.png"]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["schema"] == bench.SCHEMA_VERSION and [r["families"] for r in doc["results"]] == [100, 500]
    assert (tmp_path / "time_per_stage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "results.md").read_text().startswith("# tfp nightly benchmark")


FEED = """record_id,forename,surname,date_of_birth,sex,postcode,upn,school_urn,term,sessions_possible,sessions_missed,fixed_term_exclusions,exclusion_days,permanent_exclusion,alternative_provision
S1,Ann,Lee,2012-05-01,F,SW1A 1AA,B801200005001,100001,2024-AUT,100,5,0,0,N,N
S2,Bob,Lee,2012-02-30,M,SW1A 1AA,,100001,2024-AUT,100,5,0,0,N,N
S3,Cy,,2012-05-01,M,SW1A 1AA,,100001,2024-AUT,100,5,0,0,N,N
S4,Di,Ng,2012-05-01,X,sw1a1aa,A801200005001,100001,2024-AUT,100,5,0,0,N,N
S5,Ed,Ng,2012-05-01,,Q1 1AA,,100001,2024-XXX,10,20,0,0,N,N
S6,Fi,Ng,2026-01-01,F,SW1A 1AA,,100001,2024-SPR,100,5,0,0,N,N
S6,Fi,Ng,2012-01-01,F,SW1A 1AA,,100001,2024-SPR,100,5,0,0,N,N
S8,Gus,Ng,1899-12-31,M, ,,100001,2024-SUM,100,x,0,0,N,N
S9,Hal,Ng,2011-07-08,U,SW1A 1AA,,100001,2024-SUM,100,0,1,0.5,Y,N
"""


def test_the_pandas_peer_quarantines_what_great_expectations_quarantines():
    """The peer is only a fair comparison if it does the same work: the same rows, rule for rule."""
    frame = read_feed(FEED.encode(), "attendance_20250331.csv", "attendance")
    day = date(2025, 3, 31)
    gx = set(validate_feed(frame, "attendance", day, "attendance_20250331.csv", 1.0).quarantined["_row"])
    peer = set(bench.pandas_bad_rows(frame, "attendance", day))
    assert peer == gx == {2, 3, 4, 5, 6, 7, 8}


@pytest.mark.slow
def test_a_small_benchmark_runs_end_to_end(tmp_path):
    """The smoke version CI runs (smaller here): a real borough, a real night, both peers, three artefacts."""
    out, work = tmp_path / "out", tmp_path / "work"
    assert bench.main(["--sizes", "300", "--repeats", "1", "--out", str(out), "--work", str(work)]) == 0
    doc = json.loads((out / "results.json").read_text())
    (result,) = doc["results"]
    assert result["families"] == 300 and result["input_rows"] > 1000
    s = result["summary"]
    assert s["repeats"] == 1 and s["wall_s"]["median"] > 0 and s["peak_rss_mb"]["median"] > 50
    assert all(s["stages_s"][stage]["median"] > 0 for stage in ("validate", "stage", "link", "criteria", "package"))
    assert s["same_quarantine"] is True
    assert s["f1_tfp"]["median"] > 0.9 and s["f1_splink"]["median"] > 0.5
    assert "| 300 |" in (out / "results.md").read_text()
    assert (out / "time_per_stage.png").read_bytes()[:4] == b"\x89PNG"


def test_profile_summary_counts_inclusive_self_and_package_samples(tmp_path):
    """py-spy's raw stacks (frames root first, then the sample count) summarised by tfp function,
    by the function that held the sample, and by package."""
    from tfp_dev.bench_profile import render, summarise

    site = "/w/.venv/lib/python3.11/site-packages"
    raw = tmp_path / "profile.txt"
    raw.write_text(
        'process 1:"tfp run";main (/w/include/tfp/cli.py:60);link (/w/include/tfp/pipeline.py:70);'
        f"predict ({site}/splink/linker.py:10) 30\n"
        'process 1:"tfp run";main (/w/include/tfp/cli.py:60);validate (/w/include/tfp/pipeline.py:50);'
        f"validate ({site}/great_expectations/validator.py:5) 10\n"
        'process 1:"tfp run" 5\n'
        "not a sample line\n", encoding="utf-8")
    total, inclusive, own, packages = summarise(raw)
    assert total == 45
    assert inclusive["main (tfp.cli)"] == 40 and inclusive["link (tfp.pipeline)"] == 30
    assert own["predict (splink.linker)"] == 30 and own["(no Python frame)"] == 5
    assert packages["splink"] == 30 and packages["tfp"] == 40 and packages["great_expectations"] == 10
    page = render(2000, 12.0, total, inclusive, own, packages)
    assert "| link (tfp.pipeline) | 66.7% |" in page and "45 samples" in page


def test_the_default_borough_has_issue_17s_partners_and_optional_sources(tmp_path):
    """Issue 17 item 5: the benchmark's borough splits housing and probation among partners and has the
    health and support_services sources; its config says so and loads; the six-source shape stays."""
    from tfp.config import load_config

    shape = bench.SHAPES[bench.DEFAULT_SHAPE]
    assert shape.health and shape.support and len(shape.partners["housing"]) == 3 and len(shape.partners["probation"]) == 2
    assert bench.generate_options(shape) == ["--health", "--support-services", "--partners", "housing=clarion,peabody,hyde",
                                             "--partners", "probation=nps,crc"]
    assert bench.generate_options(bench.SHAPES["six"]) == []
    feeds = tmp_path / "feeds"
    config = load_config(bench.write_config(tmp_path, feeds, "age1" + "q" * 58, shape))
    assert config.configured_sources == (*bench.SOURCES, "health", "support_services")
    assert [p.id for p in config.partners("housing")] == ["clarion", "peabody", "hyde"]
    assert [p.id for p in config.partners("probation")] == ["nps", "crc"]
    assert config.partners("housing")[1].transport.path == feeds / "housing" / "peabody"
    assert [p.id for p in config.partners("police")] == ["police"]
    six = load_config(bench.write_config(tmp_path, feeds, "age1" + "q" * 58))
    assert six.configured_sources == bench.SOURCES and not six.multi_partner


def test_feed_files_walk_partner_folders_and_name_support_attendance(tmp_path):
    for folder, name in (("police", "incidents_20250331.csv"), ("housing/clarion", "tenancy_events_20250331.csv"),
                         ("housing/hyde", "tenancy_events_20250331.csv"),
                         ("support_services", "attendance_20250331.csv"), ("schools", "attendance_20250331.csv")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / name).write_text("record_id\n")
    found = {(s, p, d) for s, p, d, _, _ in bench.feed_files(tmp_path)}
    assert found == {("police", "police", "incidents"), ("housing", "clarion", "tenancy_events"),
                     ("housing", "hyde", "tenancy_events"), ("support_services", "support_services", "support_attendance"),
                     ("schools", "schools", "attendance")}
