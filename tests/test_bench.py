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


def test_the_four_artefacts_are_written_and_well_formed(tmp_path):
    paths = bench.write_outputs(_doc(), tmp_path)
    assert [p.name for p in paths] == ["results.json", "results.md", "time_per_stage.png", "time_memory_by_families.png"]
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
    # the one-process pandas night ran beside it, and counted eligible families as the truth does
    assert s["pandas_night_s"]["median"] > 0 and s["pandas_night_rss_mb"]["median"] > 50
    assert s["eligible_pandas_night"]["median"] == s["eligible_truth"]["median"] > 0
    assert s["eligible_tfp"]["median"] > 0 and s["same_eligible"] is not None
    assert (out / "time_memory_by_families.png").read_bytes()[:4] == b"\x89PNG"
    # a second invocation of another size keeps the first one's figures
    assert bench.main(["--sizes", "200", "--repeats", "1", "--no-peers", "--no-validation-memory", "--out", str(out),
                       "--work", str(work)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [r["families"] for r in doc["results"]] == [200, 300] and doc["validation_memory"]["ratio"] > 0


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


# --- issue 18: the targets table, results kept across invocations, the one-process pandas night -------------


def _night(wall: float, eligible_tfp: int = 50, eligible_pandas: int = 50) -> dict:
    return {"succeeded": True, "wall_s": wall, "peak_rss_mb": 300.0, "ratio": 11.0 / wall,
            "eligible_tfp": eligible_tfp, "eligible_pandas": eligible_pandas, "eligible_truth": 50,
            "same_eligible": eligible_tfp == eligible_pandas}


def _sized(families: int, wall: float, peak: float = 900.0, repeats: int = 3, night: bool = True) -> dict:
    runs = [{**_run(wall, 4), "peak_rss_mb": peak, **({"night": _night(wall / 4)} if night else {})}
            for _ in range(repeats)]
    return {"families": families, "input_rows": families * 20, "runs": runs, "summary": bench.summarise(runs),
            "command": f"python -m tfp_dev.bench --sizes {families}", "created": "2026-12-02T08:00:00"}


def _targets_doc(*results: dict, memory: dict | None = None) -> dict:
    doc = {**_doc(), "results": list(results), "scaling": bench.scaling(results)}
    if memory:
        doc["validation_memory"] = memory
    return doc


def test_the_pandas_night_is_summarised_beside_tfp():
    s = _sized(2000, 12.0)["summary"]
    assert s["pandas_night_s"]["median"] == 3.0 and s["tfp_vs_pandas_night"]["median"] == pytest.approx(11 / 3)
    assert s["eligible_tfp"]["median"] == 50 and s["same_eligible"] is True
    runs = [{**_run(10, 4), "night": _night(2.0, 50, 49)}, {**_run(10, 4), "night": {"succeeded": False}}]
    s = bench.summarise(runs)
    assert s["same_eligible"] is False and s["pandas_night_s"]["n"] == 1
    assert bench.summarise([_run(10, 4)])["same_eligible"] is None  # --no-peers: nothing to compare


def test_targets_say_met_missed_or_not_measured_without_a_backfill():
    from tfp_dev.bench_targets import NOT_MEASURED, render_targets, targets

    memory = {"ratio": 1.6, "validation_mb": 320.0, "file_mb": 200.0}
    doc = _targets_doc(_sized(2000, 7.5), _sized(10000, 20.0), _sized(50000, 110.0, peak=1400.0, repeats=1),
                       memory=memory)
    by_target = {t: (f, m) for t, f, m in targets(doc)}
    assert len(by_target) == len(targets(doc)) == 11  # every target has a row of its own
    first = by_target["fixed cost: a 2,000-family night ≤ 8 s end to end under `tfp run`"]
    assert first == ("7.5 s (median of 3)", "yes")
    assert by_target["big borough: 50,000 families ≤ 75 s end to end"] == ("110.0 s (median of 1)", "no")
    assert by_target["big borough: peak memory of the whole process tree ≤ 1.5 GB (1,536 MB)"][1] == "yes"
    assert by_target["validation: memory ≤ 2× the largest file's size"] == ("1.6× (320 MB for a 200 MB file)", "yes")
    assert by_target["validation: the validate stage within 2× the same rules in plain pandas"][1] == "no"  # 8×
    assert by_target["growth: 10,000 → 50,000 families ≤ 5× the time"] == ("×5.50 (20.0 s → 110.0 s)", "no")
    assert by_target["growth: a 200,000-family night finishes within this machine's memory (reported)"] == (
        NOT_MEASURED, NOT_MEASURED)
    for target in ("fixed cost: ≤ 15 s per night in a scheduler backfill (LocalExecutor)",
                   "backfill: 365 nights of a 2,000-family borough through the scheduler ≤ 45 min",
                   "backfill: deliveries byte-identical to single runs"):
        assert by_target[target] == (NOT_MEASURED, NOT_MEASURED)
    peers = by_target["peers side by side in one run: Splink directly, pandas validation, a one-process pandas night"]
    assert peers[1] == "yes" and "tfp ÷ pandas night" in peers[0]
    table = "\n".join(render_targets(doc))
    assert table.count("\n| ") == 12 and "backfill.json" not in table  # header + 11 rows


def test_targets_read_a_backfill_and_a_200000_point_and_survive_a_malformed_backfill(tmp_path):
    from tfp_dev.bench_targets import NOT_MEASURED, read_backfill, targets

    doc = _targets_doc(_sized(2000, 9.0), _sized(50000, 70.0), _sized(200000, 400.0, peak=9000.0, repeats=1,
                                                                        night=False))
    backfill = {"total_s": 1800.0, "per_night": {"median": 4.9, "min": 4.1, "max": 7.0}, "nights": 7,
                "families": 2000, "byte_identical": True, "extrapolated_365_s": 7 * 60 * 52.1,
                "command": "python -m tfp_dev.bench_backfill"}
    by_target = {t: (f, m) for t, f, m in targets(doc, backfill)}
    assert by_target["fixed cost: ≤ 15 s per night in a scheduler backfill (LocalExecutor)"] == (
        "4.9 s per night (median, 4.1–7.0) (7 nights of 2,000 families)", "yes")
    figure, met = by_target["backfill: 365 nights of a 2,000-family borough through the scheduler ≤ 45 min"]
    assert "extrapolated" in figure and "365 nights not run" in figure and met == "no (extrapolated)"
    assert by_target["backfill: deliveries byte-identical to single runs"][1] == "yes"
    full = targets(doc, {**backfill, "nights": 365, "total_s": 2400.0})
    assert full[2] == ("backfill: 365 nights of a 2,000-family borough through the scheduler ≤ 45 min",
                       "40.0 min (365 nights of 2,000 families)", "yes")
    figure, met = by_target["growth: a 200,000-family night finishes within this machine's memory (reported)"]
    assert figure.startswith("400.0 s, peak 9,000 MB of 8,192 MB") and met == "no"  # the test machine has 8 GB
    assert "×5.71 the 50,000-family time" in figure
    assert by_target["growth: 10,000 → 50,000 families ≤ 5× the time"] == (NOT_MEASURED, NOT_MEASURED)
    # another tool writes backfill.json: a broken or odd one reads as not measured, never as a crash
    (tmp_path / "backfill.json").write_text("{not json")
    assert read_backfill(tmp_path / "backfill.json") is None and read_backfill(tmp_path / "absent.json") is None
    odd = {t: (f, m) for t, f, m in targets(doc, {"per_night": "fast", "nights": "many", "byte_identical": "yes"})}
    assert odd["fixed cost: ≤ 15 s per night in a scheduler backfill (LocalExecutor)"] == (NOT_MEASURED, NOT_MEASURED)
    assert odd["backfill: deliveries byte-identical to single runs"] == (NOT_MEASURED, NOT_MEASURED)
    failed = _targets_doc({**_sized(200000, 1.0, repeats=1), "summary": bench.summarise([_run(1, 1, ok=False)])})
    assert targets(failed)[9][1:] == ("the run failed", "no")



def test_targets_read_backfill_json_as_bench_backfill_writes_it():
    """The two tools meet in backfill.json: the targets read the figures tfp_dev.bench_backfill nests
    under ``summary`` (per-night spread, total, the 365-night extrapolation, byte-identical)."""
    from datetime import date

    from tfp_dev import bench_backfill
    from tfp_dev.bench_targets import targets

    dates = [date(2025, 3, 30), date(2025, 3, 31)]
    summary = bench_backfill.summarise(
        dates, [{"duration_s": 20.0}, {"duration_s": 30.0}], [{"wall_s": 10.0}, {"wall_s": 12.0}], 60.0, {}, 900.0,
        {"byte_identical": True, "differing": []})
    written = {"nights": 2, "families": 2000, "summary": summary}
    by_target = {t: (f, m) for t, f, m in targets(_targets_doc(_sized(2000, 9.0)), written)}
    assert by_target["fixed cost: ≤ 15 s per night in a scheduler backfill (LocalExecutor)"] == (
        "25.0 s per night (median, 20.0–30.0) (2 nights of 2,000 families)", "no")
    figure, met = by_target["backfill: 365 nights of a 2,000-family borough through the scheduler ≤ 45 min"]
    assert figure.startswith("152.1 min extrapolated") and met == "no (extrapolated)"
    assert by_target["backfill: deliveries byte-identical to single runs"] == (
        "identical (2 nights of 2,000 families)", "yes")

def test_results_of_separate_invocations_accumulate():
    """2,000 x 3 today, 50,000 x 1 and 200,000 x 1 later: one results.json with every size, each with the
    command that measured it; a size measured again replaces its figures; another borough starts afresh."""
    shape = {"name": "issue17"}
    earlier = {**_targets_doc(_sized(2000, 9.0), _sized(10000, 20.0), memory={"ratio": 1.5}),
               "schema": bench.SCHEMA_VERSION, "seed": 1, "reference_date": "2025-03-31", "shape": shape,
               "notes": ["quiet machine"]}
    now = {"schema": bench.SCHEMA_VERSION, "seed": 1, "reference_date": "2025-03-31", "shape": shape,
           "sizes": [10000, 200000], "results": [], "notes": ["quiet machine", "loaded"], "command": "now",
           "created": "2026-12-03T00:00:00"}
    doc = bench.carry_over(earlier, dict(now))
    assert [r["families"] for r in doc["results"]] == [2000, 10000]  # 10,000 stays until measured again
    assert doc["validation_memory"]["ratio"] == 1.5 and doc["notes"] == ["quiet machine", "loaded"]
    assert doc["results"][0]["command"] == "python -m tfp_dev.bench --sizes 2000"
    assert bench.carry_over({**earlier, "shape": {"name": "six"}}, dict(now))["results"] == []
    assert bench.carry_over({**earlier, "schema": bench.SCHEMA_VERSION - 1}, dict(now))["results"] == []
    assert bench.carry_over(None, dict(now))["results"] == []


def test_the_accumulated_results_render_targets_peers_profiles_and_both_charts(tmp_path):
    from tfp_dev.bench_targets import PROFILE_AFTER, PROFILE_BEFORE, PROFILE_FIXED_COST

    doc = _targets_doc(_sized(2000, 7.0), _sized(10000, 20.0), _sized(50000, 60.0, repeats=1))
    (tmp_path / PROFILE_BEFORE).write_text("# before\n")
    paths = bench.write_outputs(doc, tmp_path)
    assert [p.name for p in paths] == ["results.json", "results.md", "time_per_stage.png",
                                       "time_memory_by_families.png"]
    assert paths[3].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths[1].read_text()
    assert page.index("## Targets (issue 18)") < page.index("## Figures") < page.index("## Peers, side by side")
    assert "| 2,000 | 7.0 | 1.8 | 6.3 | 900 | 300 | 0.40 | 8.0 | 5.0 | 50 / 50 / 50 | yes |" in page
    assert f"[`{PROFILE_BEFORE}`]({PROFILE_BEFORE})" in page and "after: not yet measured" in page
    assert "![time and peak memory by families](time_memory_by_families.png)" in page
    assert "- 50,000 families: `python -m tfp_dev.bench --sizes 50000` on 2026-12-02" in page
    (tmp_path / PROFILE_AFTER).write_text("# after\n")
    (tmp_path / "backfill.json").write_text(json.dumps({"per_night": {"median": 20.0}, "nights": 7}))
    page = bench.write_outputs(doc, tmp_path)[1].read_text()
    assert f"after: [`{PROFILE_AFTER}`]({PROFILE_AFTER})" in page and PROFILE_FIXED_COST not in page
    (tmp_path / PROFILE_FIXED_COST).write_text("# fixed cost before and after\n")
    assert f"[`{PROFILE_FIXED_COST}`]({PROFILE_FIXED_COST})" in bench.write_outputs(doc, tmp_path)[1].read_text()
    assert "| fixed cost: ≤ 15 s per night in a scheduler backfill (LocalExecutor) | 20.0 s per night (median) (7 nights) | no |" in page


@pytest.mark.slow
def test_the_pandas_night_finds_the_truths_eligible_families(tmp_path):
    """The one-process pandas night on a small generated borough with partner folders: every row read,
    the bad ones dropped, and as many eligible families as the generator's truth (true links)."""
    import csv

    from tfp_dev.bench_night import pandas_night, truth_eligible

    feeds, _ = bench.generate_feeds(tmp_path, 200, 20250331, bench.SHAPES[bench.DEFAULT_SHAPE])
    figures = pandas_night(feeds, tmp_path / "night")
    files = bench.feed_files(feeds)
    rows = sum(len(list(csv.reader(p.open(encoding="utf-8-sig")))) - 1 for *_, p in files)
    bad = sum(len(bench.pandas_bad_rows(read_feed(p.read_bytes(), p.name, d), d, day)) for _, _, d, day, p in files)
    assert figures["rows_read"] == rows and figures["rows_quarantined"] == bad  # what tfp's reader and rules give
    assert 0 < bad < rows * 0.05
    assert figures["records_linked"] > 0.7 * (figures["records_linked"] + figures["records_unlinked"])
    assert figures["families_eligible"] == truth_eligible(feeds) > 0
    names = sorted(p.name for p in (tmp_path / "night").iterdir())
    assert names == ["tfp_submission_E09000031_20250331.csv", "tfp_summary_E09000031_20250331.csv",
                     "tfp_withdrawals_E09000031_20250331.csv"]
    with (tmp_path / "night" / "tfp_summary_E09000031_20250331.csv").open() as handle:
        summary = {(r["measure"], r["programme_status"]): int(r["count"]) for r in csv.DictReader(handle)}
    assert summary["families_eligible", "all"] == figures["families_eligible"]
    assert summary["persons_submitted", "all"] == figures["persons_submitted"]
