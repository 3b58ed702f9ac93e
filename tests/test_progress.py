"""The progress file (contract section 10): baseline flags, sustained_progress and off_out_of_work_benefits
on SQLite and PostgreSQL, against hand-worked cases and, over a year of month-end nights, against the
truth's independent pandas reading (tfp_dev.truth.truth_progress)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import pandas as pd
from sqlalchemy import insert

from criteria_helpers import CRITERIA, born
from tfp.anonymise import family_token
from tfp.feeds import DATASETS
from tfp.progress import PROGRESS_COLUMNS, compute_progress, month_ends, progress_csv
from tfp.warehouse import FLAGS, connect, landing_log, links, person_consent, staging
from tfp_dev.truth import truth_progress

R = date(2024, 6, 30)
ATTACHED = date(2023, 1, 1)
KEY = bytes(32)


@dataclass
class Borough:
    """A few families and their records, landed night by night as the stages before criteria leave them:
    a roster file, each dataset's records dated on or before the night, their links of the night, and
    consent (kept or not) of the night. The same rows feed the truth as strings."""

    people: list[dict] = field(default_factory=list)
    records: dict[str, list[dict]] = field(default_factory=dict)
    not_kept: set[str] = field(default_factory=set)
    first_night: dict[str, date] = field(default_factory=dict)  # person -> first roster file listing them

    def person(self, family: str, ref: str, dob: date, status: str = "intervention",
               attached: date | None = ATTACHED, listed_from: date | None = None) -> str:
        self.people.append({"record_id": ref, "person_ref": ref, "family_ref": family, "date_of_birth": dob,
                            "programme_status": status, "role": "adult" if dob <= born(R, 18) else "child",
                            "attached_date": attached if status == "intervention" else None,
                            "forename": "Test", "surname": "Person", "sex": "U", "postcode": "SW1A 1AA"})
        if listed_from:
            self.first_night[ref] = listed_from
        return ref

    def add(self, dataset: str, person: str, day: date, **values) -> None:
        rows = self.records.setdefault(dataset, [])
        rows.append({"record_id": f"{dataset[:3]}{len(rows) + 1:04d}", "person_ref": person, "_day": day,
                     "forename": "Test", "surname": "Person", "date_of_birth": date(1980, 1, 1), "sex": "U",
                     "postcode": "SW1A 1AA", **values})

    def asb(self, person: str, day: date) -> None:
        self.add("incidents", person, day, incident_date=day, category="asb", role="subject", proven=None)

    def claim(self, person: str, start: date, end: date | None, out_of_work: bool = True) -> None:
        self.add("benefits", person, start, benefit="jsa", out_of_work=out_of_work, claim_start=start, claim_end=end)

    def need(self, person: str, need: str, start: date, end: date | None = None) -> None:
        self.add("needs", person, start, need=need, start_date=start, end_date=end)

    # -- the warehouse ----------------------------------------------------------------------------
    def roster_on(self, night: date) -> list[dict]:
        return [p for p in self.people if self.first_night.get(p["person_ref"], date.min) <= night]

    def land(self, engine, night: date) -> None:
        with engine.begin() as conn:
            files = {"families": self.roster_on(night),
                     **{d: [r for r in rows if r["_day"] <= night] for d, rows in self.records.items()}}
            for n, (dataset, rows) in enumerate(files.items()):
                landing_id = conn.execute(insert(landing_log).values(
                    source=DATASETS[dataset].source, dataset=dataset, file_name=f"{dataset}_{night:%Y%m%d}.csv",
                    file_date=night, sha256=f"{night:%Y%m%d}{n:056d}", bytes=1, landed_at=datetime.now(UTC),
                    landed_by_run=night, status="staged").returning(landing_log.c.id)).scalar_one()
                columns = staging[dataset].c.keys()
                if rows:
                    conn.execute(insert(staging[dataset]), [
                        {k: v for k, v in {**row, "landing_id": landing_id, "file_date": night,
                                           "row_number": i}.items() if k in columns}
                        for i, row in enumerate(rows, start=1)])
                if dataset not in ("families", "needs") and rows:
                    conn.execute(insert(links), [
                        {"reference_date": night, "dataset": dataset, "record_id": r["record_id"],
                         "person_ref": r["person_ref"], "match_probability": 1.0, "method": "nino"} for r in rows])
            conn.execute(insert(person_consent), [
                {"reference_date": night, "person_ref": p["person_ref"], "state": "refused" if not kept else "given",
                 "state_on": date(2022, 1, 1), "kept": kept}
                for p in self.roster_on(night) for kept in [p["person_ref"] not in self.not_kept]])

    # -- the same rows for the truth --------------------------------------------------------------
    def truth(self, nights: list[date], night: date, criteria=CRITERIA) -> pd.DataFrame:
        def text(value) -> str:
            if value is None:
                return ""
            if isinstance(value, bool):
                return "Y" if value else "N"
            return value.isoformat() if isinstance(value, date) else str(value)

        def frame(rows: list[dict]) -> pd.DataFrame:
            return pd.DataFrame([{k: text(v) for k, v in r.items() if k != "_day"} for r in rows])

        rosters = {n: frame(self.roster_on(n)) for n in nights if n <= night}
        known = {d: frame([r for r in rows if r["_day"] <= night]) for d, rows in self.records.items()}
        needs = known.pop("needs", pd.DataFrame(columns=["person_ref", "need", "start_date", "end_date"]))
        kept = {p["person_ref"] for p in self.roster_on(night)} - self.not_kept
        return truth_progress(rosters, needs, known, night, kept=kept, sustain_months=criteria.sustain_months,
                              off_benefits_weeks=criteria.off_benefits_weeks, lookback_months=criteria.lookback_months,
                              persistent_absence_rate=criteria.persistent_absence_rate,
                              fixed_term_exclusions=criteria.fixed_term_exclusions).set_index("family_ref")


def _rows(engine, night: date, criteria=CRITERIA) -> dict[str, dict]:
    return {r.family_ref: {"programme_status": r.programme_status, "baseline_date": r.baseline_date.isoformat(),
                           **{f"{f}_baseline": r.baseline[f] for f in FLAGS}, **{f"{f}_now": r.now[f] for f in FLAGS},
                           "problems_baseline": r.problems_baseline, "problems_now": r.problems_now,
                           "sustained_progress": r.sustained_progress,
                           "off_out_of_work_benefits": r.off_out_of_work_benefits}
            for r in compute_progress(engine, night, criteria)}


def _as_truth(truth: pd.DataFrame) -> dict[str, dict]:
    return {ref: {k: (v if k in ("programme_status", "baseline_date") else int(v)) for k, v in row.items()}
            for ref, row in truth.to_dict("index").items()}


def test_month_ends():
    assert month_ends(date(2024, 6, 30), 3) == [date(2024, 6, 30), date(2024, 5, 31), date(2024, 4, 30)]
    assert month_ends(date(2024, 3, 15), 3) == [date(2024, 2, 29), date(2024, 1, 31), date(2023, 12, 31)]


def test_baseline_is_judged_at_the_baseline_date_from_what_is_known_tonight(warehouse_url):
    b = Borough()
    b.asb(b.person("improved", "i1", born(R, 40)), date(2022, 6, 1))  # in the baseline's window only
    b.asb(b.person("still", "s1", born(R, 40)), date(2024, 1, 1))  # after the baseline: now only
    # 18 on R - 100 days: 17 at the baseline, so a claim then is a child's; an adult's now
    b.claim(b.person("grew_up", "g1", born(R, 18, -100)), date(2022, 1, 1), None)
    # a comparison family: its baseline is the first roster file listing it (2024-03-31), not R
    b.need(b.person("late", "l1", born(R, 10), status="comparison", listed_from=date(2024, 3, 31)),
           "child_in_need", date(2023, 1, 1), date(2024, 4, 1))
    b.asb(b.person("not_kept", "n1", born(R, 40)), date(2022, 6, 1))
    b.not_kept.add("n1")
    engine = connect(warehouse_url)
    b.land(engine, date(2024, 3, 31))
    b.land(engine, R)
    got = _rows(engine, R)
    assert set(got) == {"improved", "still", "grew_up", "late"}  # a family with no kept member has no row
    assert (got["improved"]["crime_asb_baseline"], got["improved"]["crime_asb_now"]) == (1, 0)
    assert (got["still"]["crime_asb_baseline"], got["still"]["crime_asb_now"]) == (0, 1)
    assert (got["grew_up"]["worklessness_baseline"], got["grew_up"]["worklessness_now"]) == (0, 1)
    assert got["late"]["baseline_date"] == "2024-03-31" and got["improved"]["baseline_date"] == "2023-01-01"
    assert got["late"]["children_need_help_baseline"] == 1 and got["late"]["children_need_help_now"] == 1
    assert got == _as_truth(b.truth([date(2024, 3, 31), R], R))


def test_sustained_progress_over_the_last_month_ends(warehouse_url):
    # R = 2024-06-30; the six month-ends are 2024-01-31 .. 2024-06-30; the oldest window is (2023-01-31, 2024-01-31]
    b = Borough()
    b.asb(b.person("stayed", "a1", born(R, 40)), date(2023, 1, 1))
    b.asb(b.person("edge", "e1", born(R, 40), attached=date(2023, 1, 31)), date(2023, 1, 31))  # 2024-01-31 excludes it
    b.asb(b.person("lately", "b1", born(R, 40)), date(2023, 1, 1))
    b.asb("b1", date(2023, 2, 15))  # flagged at 2024-01-31
    b.asb(b.person("none", "c1", born(R, 40)), date(2024, 5, 1))  # no baseline problem: never sustained
    b.asb(b.person("new_problem", "f1", born(R, 40)), date(2023, 1, 1))
    b.need("f1", "domestic_abuse", date(2024, 1, 1))  # not a baseline problem: does not undo it
    engine = connect(warehouse_url)
    b.land(engine, R)
    got = _rows(engine, R)
    assert {ref: row["sustained_progress"] for ref, row in got.items()} == {
        "stayed": 1, "edge": 1, "lately": 0, "none": 0, "new_problem": 1}
    assert got == _as_truth(b.truth([R], R))
    seven = CRITERIA.model_copy(update={"sustain_months": 7})  # back to 2023-12-31: 2023-01-01 is in its window
    assert _rows(engine, R, seven)["stayed"]["sustained_progress"] == 0
    assert _rows(engine, R, seven) == _as_truth(b.truth([R], R, seven))


def test_off_out_of_work_benefits(warehouse_url):
    # R - 26 weeks = 2023-12-31; the baseline is 2023-01-01
    b = Borough()
    b.claim(b.person("off", "o1", born(R, 40)), date(2022, 6, 1), date(2023, 6, 1))
    b.claim(b.person("edge", "e1", born(R, 40)), date(2022, 6, 1), date(2023, 12, 31))
    b.claim(b.person("too_late", "t1", born(R, 40)), date(2022, 6, 1), date(2024, 1, 1))
    b.claim(b.person("after_baseline", "a1", born(R, 40)), date(2023, 2, 1), date(2023, 6, 1))
    b.claim(b.person("in_work", "w1", born(R, 40)), date(2022, 6, 1), date(2023, 6, 1), out_of_work=False)
    b.claim(b.person("back_on", "k1", born(R, 40)), date(2022, 6, 1), date(2023, 6, 1))
    b.claim("k1", date(2024, 5, 1), None)
    b.claim(b.person("a_child_then", "c1", born(ATTACHED, 17)), date(2022, 6, 1), date(2023, 6, 1))
    b.claim(b.person("another_member", "m1", born(R, 40)), date(2022, 6, 1), date(2023, 6, 1))
    b.claim(b.person("another_member", "m2", born(R, 40)), date(2024, 5, 1), None)  # someone else is on now
    engine = connect(warehouse_url)
    b.land(engine, R)
    got = _rows(engine, R)
    assert {ref: row["off_out_of_work_benefits"] for ref, row in got.items()} == {
        "off": 1, "edge": 1, "too_late": 0, "after_baseline": 0, "in_work": 0, "back_on": 0, "a_child_then": 0,
        "another_member": 1}
    assert got == _as_truth(b.truth([R], R))
    twenty = CRITERIA.model_copy(update={"off_benefits_weeks": 20})
    assert _rows(engine, R, twenty)["too_late"]["off_out_of_work_benefits"] == 1
    assert _rows(engine, R, twenty) == _as_truth(b.truth([R], R, twenty))


def test_the_csv_is_sorted_by_token_with_months_and_is_the_same_on_a_rerun(warehouse_url):
    b = Borough()
    for i in range(5):
        b.asb(b.person(f"fam{i}", f"p{i}", born(R, 40)), date(2022, 6, 1))
    engine = connect(warehouse_url)
    b.land(engine, R)
    text, rows = progress_csv(compute_progress(engine, R, CRITERIA), KEY)
    again, _ = progress_csv(compute_progress(engine, R, CRITERIA), KEY)
    assert text == again and rows == 5 and text.endswith("\n") and "\r" not in text
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert tuple(parsed[0]) == PROGRESS_COLUMNS
    tokens = [r["family_token"] for r in parsed]
    assert tokens == sorted(tokens) == sorted(family_token(KEY, f"fam{i}") for i in range(5))
    assert {r["baseline_date"] for r in parsed} == {"2023-01"}
    assert all(r["crime_asb_baseline"] == "1" and r["sustained_progress"] == "1" for r in parsed)


NIGHTS = month_ends(date(2024, 12, 31), 12)[::-1]  # 2024-01-31 .. 2024-12-31


def test_a_year_of_month_end_nights_matches_the_truth_night_by_night(warehouse_url):
    """Twelve month-end nights, each landed and judged as that night: sustained_progress appears and
    disappears on the nights the truth says, and each night's file matches the truth for every family."""
    attached = date(2023, 4, 1)
    b = Borough()
    # asb on 2023-03-15: flagged at month-ends 2023-03-31 .. 2024-02-29, so sustained from 2024-08-31
    b.asb(b.person("stays", "s1", born(R, 40), attached=attached), date(2023, 3, 15))
    b.asb(b.person("relapses", "r1", born(R, 40), attached=attached), date(2023, 3, 15))
    b.asb("r1", date(2024, 10, 10))  # back on 2024-10-31: sustained in August and September only
    # on out-of-work benefits at the baseline until 2024-02-15: off from 2024-08-31 (R - 26 weeks >= it)
    b.claim(b.person("off", "o1", born(R, 40), attached=attached), date(2023, 1, 1), date(2024, 2, 15))
    b.need(b.person("comparison", "c1", born(R, 9), status="comparison", listed_from=date(2024, 3, 31)),
           "child_in_need", date(2023, 12, 1), date(2024, 4, 15))
    engine = connect(warehouse_url)
    sustained: dict[str, list[int]] = {"stays": [], "relapses": [], "off": []}
    off: list[int] = []
    for night in NIGHTS:
        b.land(engine, night)
        got = _rows(engine, night)
        assert got == _as_truth(b.truth(NIGHTS, night)), night
        for ref in sustained:
            sustained[ref].append(got[ref]["sustained_progress"])
        off.append(got["off"]["off_out_of_work_benefits"])
        if night >= date(2024, 3, 31):
            assert got["comparison"]["baseline_date"] == "2024-03-31"
    assert sustained["stays"] == [0] * 7 + [1] * 5
    assert sustained["relapses"] == [0] * 7 + [1, 1, 0, 0, 0]
    assert sustained["off"] == [0] * 6 + [1] * 6  # worklessness at the baseline, last at 2024-01-31
    assert off == [0] * 7 + [1] * 5


def test_a_generated_borough_tells_every_progress_story(tmp_path):
    """The generator's stories are in its truth: families whose baseline problem went and stayed gone,
    some whose problem went only lately or came back, and adults off out-of-work benefits."""
    from tfp_dev.generate import generate

    generate(tmp_path, families=120, seed=7, on=date(2025, 3, 31), progress_truth=True)
    rows = pd.read_csv(tmp_path / "truth" / "progress_consent.csv", dtype=str)
    improved = rows[(rows["crime_asb_baseline"] == "1") & (rows["crime_asb_now"] == "0")]
    assert (improved["sustained_progress"] == "1").any() and (improved["sustained_progress"] == "0").any()
    assert (rows["off_out_of_work_benefits"] == "1").any()
    assert set(rows["programme_status"]) == {"intervention", "comparison"}
