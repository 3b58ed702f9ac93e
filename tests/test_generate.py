"""The synthetic borough: byte-for-byte determinism, valid rows that pass the feed rules, invalid rows
that break exactly their declared rule, a truth folder that agrees with itself, the variety the
linkage and criteria need, and hand-made boundary cases for ``truth_flags``."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from tfp import cli
from tfp.feeds import DATASETS, HEALTH_DATASETS, OPTIONAL_SOURCES, PARTNER_DATASETS, file_name
from tfp.identifiers import (
    is_valid_nhs_number,
    is_valid_nino,
    is_valid_postcode,
    is_valid_upn,
    normalise_postcode,
)
from tfp.warehouse import FLAGS
from tfp_dev.generate import (
    BAD_NHS_NUMBER,
    BAD_NINO,
    BAD_POSTCODE,
    BAD_UPN_CHECK_LETTER,
    CODE_NOT_IN_LIST,
    DATE_AFTER_FILE_DATE,
    DOB_BEFORE_1900,
    DUPLICATE_RECORD_ID,
    MISSING_SURNAME,
    NICKNAMES,
    RULES,
    SESSIONS_MISSED_OVER_POSSIBLE,
    UNPARSEABLE_DATE,
    generate,
)
from tfp_dev.truth import (
    FAMILY_COLUMNS,
    add_months,
    consent_states,
    ever_withdrawn,
    kept_persons,
    last_terms_ended,
    truth_flags,
)

ON = date(2024, 2, 29)  # a leap day: the window starts on 2023-02-28 (excluded)
# what a borough has unless asked for the optional sources (support_services)
CORE = tuple(d for d in DATASETS if DATASETS[d].source not in OPTIONAL_SOURCES)
CORE_PARTNER = tuple(d for d in PARTNER_DATASETS if d in CORE)
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=object, keep_default_na=False)


def feed(out: Path, dataset: str) -> pd.DataFrame:
    return read(out / DATASETS[dataset].source / file_name(dataset, ON))


@pytest.fixture(scope="module")
def borough(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("borough")
    generate(out, families=600, seed=11, on=ON, invalid_rate=0.02, health=True)  # every dataset, health too
    return out


# ------------------------------------------------------------------ an independent row checker
def _date(value: str) -> date | None:
    if not ISO_DATE.match(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def broken_rules(dataset: str, row: dict[str, str], on: date) -> set[str]:
    """The row-level rules of contract section 3 a row breaks (record_id uniqueness aside)."""
    d = DATASETS[dataset]
    broken = set()
    for column in d.required:
        if not row[column].strip():
            broken.add(MISSING_SURNAME if column == "surname" else f"missing_{column}")
    for column in d.dates:
        if not row[column]:
            continue
        parsed = _date(row[column])
        if parsed is None:
            broken.add(UNPARSEABLE_DATE)
            continue
        if column == "date_of_birth" and parsed.year < 1900:
            broken.add(DOB_BEFORE_1900)
        if column in d.not_after_file_date and parsed > on:
            broken.add(DATE_AFTER_FILE_DATE)
    for column, codes in d.codes.items():
        if row[column] and row[column] not in codes:
            broken.add(CODE_NOT_IN_LIST)
    if row.get("nino") and not is_valid_nino(row["nino"]):
        broken.add(BAD_NINO)
    if row.get("upn") and not is_valid_upn(row["upn"]):
        broken.add(BAD_UPN_CHECK_LETTER)
    if row.get("nhs_number") and not is_valid_nhs_number(row["nhs_number"]):
        broken.add(BAD_NHS_NUMBER)
    if row.get("postcode") and not is_valid_postcode(row["postcode"]):
        broken.add(BAD_POSTCODE)
    for column in d.integers:
        if row[column] and not re.fullmatch(r"\d+", row[column]):
            broken.add(f"integer_{column}")
    for column in d.decimals:
        if row[column] and not re.fullmatch(r"\d+(\.\d+)?", row[column]):
            broken.add(f"decimal_{column}")
    if dataset == "attendance" and not broken & {"integer_sessions_possible", "integer_sessions_missed"}:
        if not 0 <= int(row["sessions_missed"]) <= int(row["sessions_possible"]):
            broken.add(SESSIONS_MISSED_OVER_POSSIBLE)
    return broken


# ------------------------------------------------------------------ determinism
def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    counts = generate(first, families=120, seed=5, on=ON)
    assert cli.main(["generate", "--out", str(second), "--families", "120", "--seed", "5",
                     "--date", ON.isoformat()]) == 0
    generate(other, families=120, seed=6, on=ON)
    files = sorted(p.relative_to(first) for p in first.rglob("*.csv"))
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.csv"))
    assert len(files) == len(CORE) + 5  # neither health nor support_services unless asked for
    assert not (first / "support_services").exists() and not (first / "health").exists()
    for f in files:
        assert (first / f).read_bytes() == (second / f).read_bytes(), f
    assert (first / "police" / file_name("incidents", ON)).read_bytes() != \
        (other / "police" / file_name("incidents", ON)).read_bytes()
    for dataset in CORE:
        rows = len(read(first / DATASETS[dataset].source / file_name(dataset, ON)))
        assert counts[file_name(dataset, ON)] == rows
    assert "nhs_number" not in (first / "children_services" / file_name("families", ON)).read_text().split("\n")[0]


def test_the_health_source_is_opt_in_and_changes_no_other_feed(tmp_path):
    """``--health`` adds the health feeds and the roster's nhs_number column; every other feed file is byte for
    byte the one generated without it, and the same seed gives the same health files."""
    plain, health, again = tmp_path / "plain", tmp_path / "health", tmp_path / "again"
    generate(plain, families=120, seed=5, on=ON)
    assert cli.main(["generate", "--out", str(health), "--families", "120", "--seed", "5", "--date", ON.isoformat(),
                     "--health"]) == 0
    generate(again, families=120, seed=5, on=ON, health=True)
    for path in sorted(plain.glob("*/*.csv")):
        if path.parent.name != "truth" and path.name != file_name("families", ON):
            assert path.read_bytes() == (health / path.relative_to(plain)).read_bytes(), path.name
    for path in sorted(health.rglob("*.csv")):
        assert path.read_bytes() == (again / path.relative_to(health)).read_bytes(), path.name
    with_nhs, without = feed(health, "families"), feed(plain, "families")
    assert (with_nhs.drop(columns="nhs_number") == without).all().all()
    numbers = with_nhs["nhs_number"][with_nhs["nhs_number"] != ""]
    assert 0.5 * len(with_nhs) < len(numbers) < len(with_nhs) and numbers.is_unique
    assert all(is_valid_nhs_number(n) for n in numbers)
    for dataset in HEALTH_DATASETS:
        assert len(feed(health, dataset)) > 10


# ------------------------------------------------------------------ validity
def test_every_file_has_the_contract_columns_and_is_utf8(borough):
    for dataset in CORE:
        d = DATASETS[dataset]
        path = borough / d.source / file_name(dataset, ON)
        text = path.read_bytes().decode("utf-8")
        assert text.split("\n", 1)[0] == ",".join(d.columns)
        assert "\r" not in text


def test_valid_rows_pass_every_rule_and_invalid_rows_break_exactly_their_rule(borough):
    truth = read(borough / "truth" / "records.csv")
    seen_rules = set()
    for dataset in (*CORE_PARTNER, *HEALTH_DATASETS):  # the module borough has health, not support_services
        rows = feed(borough, dataset)
        mine = truth[truth["dataset"] == dataset].reset_index(drop=True)
        assert len(rows) == len(mine) and (rows["record_id"] == mine["record_id"]).all()
        first_seen: set[str] = set()
        for row, (_, t) in zip(rows.to_dict("records"), mine.iterrows(), strict=True):
            broken = broken_rules(dataset, row, ON)
            duplicate = row["record_id"] in first_seen
            first_seen.add(row["record_id"])
            if duplicate:
                broken.add(DUPLICATE_RECORD_ID)
            if t["valid"] == "Y":
                assert broken == set(), (dataset, broken)
                assert t["broken_rule"] == ""
            else:
                assert broken == {t["broken_rule"]}, (dataset, t["broken_rule"], broken)
                seen_rules.add(t["broken_rule"])
        bad = (mine["valid"] == "N").sum()
        assert 0 < bad < 0.05 * len(rows)
    assert seen_rules == set(RULES)


def test_children_services_files_are_valid(borough):
    roster = feed(borough, "families")
    for row in roster.to_dict("records"):
        assert is_valid_postcode(row["postcode"]) and normalise_postcode(row["postcode"]) == row["postcode"]
        assert not row["nino"] or is_valid_nino(row["nino"])
        assert not row["upn"] or is_valid_upn(row["upn"])
        assert _date(row["date_of_birth"]) <= ON and row["role"] in ("adult", "child")
        assert bool(row["attached_date"]) == (row["programme_status"] == "intervention")
        assert not row["attached_date"] or _date(row["attached_date"]) <= ON
    assert roster["person_ref"].is_unique and (roster["record_id"] == roster["person_ref"]).all()
    for ids in ("nino", "upn"):
        present = roster.loc[roster[ids] != "", ids]
        assert present.is_unique
    share = (roster.drop_duplicates("family_ref")["programme_status"] == "intervention").mean()
    assert 0.5 < share < 0.7
    needs, consent = feed(borough, "needs"), feed(borough, "consent")
    assert set(needs["person_ref"]) <= set(roster["person_ref"])
    assert set(needs["need"]) == set(DATASETS["needs"].codes["need"])
    assert (needs["start_date"].map(_date) <= ON).all()
    assert set(consent["status"]) == {"given", "refused", "withdrawn"}
    assert (pd.to_datetime(consent["recorded_at"], format="ISO8601").dt.date < ON).all()


def test_events_lie_within_three_years_before_the_file_date(borough):
    incidents = feed(borough, "incidents")
    truth = read(borough / "truth" / "records.csv")
    valid = incidents[(truth.loc[truth["dataset"] == "incidents", "valid"] == "Y").to_numpy()]
    when = valid["incident_date"].map(_date)
    assert when.max() <= ON and when.min() >= add_months(ON, -36)
    assert (when == ON).any() or (when > add_months(ON, -1)).any()


def test_partner_identifiers_follow_the_roster(borough):
    roster = feed(borough, "families").set_index("person_ref")
    truth = read(borough / "truth" / "records.csv")
    assert "nino" not in DATASETS["incidents"].columns
    for dataset, column, low in (("benefits", "nino", 0.8), ("cases", "nino", 0.6), ("attendance", "upn", 0.8)):
        rows = feed(borough, dataset)
        mine = truth[truth["dataset"] == dataset].reset_index(drop=True)
        on_roster = rows[(mine["person_ref"] != "") & (mine["valid"] == "Y")]
        refs = mine.loc[on_roster.index, "person_ref"]
        assert (on_roster[column] != "").mean() > low
        filled = on_roster[column] != ""
        roster_values = roster.loc[refs[filled], column].to_numpy()
        # never a wrong identifier: where the roster has one, the partner's equals it
        assert ((roster_values == "") | (roster_values == on_roster.loc[filled, column].to_numpy())).all()
    strangers = feed(borough, "benefits")[(truth.loc[truth["dataset"] == "benefits", "person_ref"] == "").to_numpy()]
    assert not set(strangers["nino"]) & set(roster["nino"]) - {""}


# ------------------------------------------------------------------ truth
def test_truth_files_agree_with_the_feeds(borough):
    roster = feed(borough, "families")
    truth = read(borough / "truth" / "records.csv")
    assert list(truth.columns) == ["dataset", "record_id", "person_ref", "valid", "broken_rule"]
    assert set(truth["person_ref"]) - {""} <= set(roster["person_ref"])
    assert set(truth["valid"]) == {"Y", "N"}
    persons = read(borough / "truth" / "persons.csv")
    assert list(persons.columns) == ["person_ref", "family_ref", "consent_state", "consent_state_on"]
    assert sorted(persons["person_ref"]) == sorted(roster["person_ref"])
    assert ((persons["consent_state"] == "none") == (persons["consent_state_on"] == "")).all()
    everyone = read(borough / "truth" / "families.csv")
    assert list(everyone.columns) == list(FAMILY_COLUMNS)
    # everyone but the withdrawn: of them only references remain (contract section 10)
    withdrawn = ever_withdrawn(feed(borough, "consent"), ON)
    assert withdrawn
    counted = roster[~roster["person_ref"].isin(withdrawn)]
    assert sorted(everyone["family_ref"]) == sorted(set(counted["family_ref"]))
    for name, basis in (("families_consent", "consent"), ("families_public_task", "public_task")):
        kept = kept_persons(persons, basis)
        part = read(borough / "truth" / f"{name}.csv")
        assert set(part["family_ref"]) == set(roster.loc[roster["person_ref"].isin(kept), "family_ref"])
        # counting fewer people can only take flags away
        joined = part.merge(everyone, on="family_ref", suffixes=("", "_all"))
        for flag in FLAGS:
            assert (joined[flag].astype(int) <= joined[f"{flag}_all"].astype(int)).all()
        # eligible: two problems and a kept member under 18 at R (contract section 10)
        kept_roster = roster[roster["person_ref"].isin(kept)]
        with_child = set(kept_roster.loc[kept_roster["date_of_birth"].map(
            lambda d: d != "" and add_months(_date(d), 12 * 18) > ON), "family_ref"])
        expected = (part["problem_count"].astype(int) >= 2) & part["family_ref"].isin(with_child)
        assert (part["eligible"] == expected.astype(int).astype(str)).all()
        assert ((part["problem_count"].astype(int) >= 2) & ~part["family_ref"].isin(with_child)).any()


def test_the_borough_has_the_variety_linkage_and_criteria_need(borough):
    roster = feed(borough, "families")
    names = pd.concat([roster["forename"], roster["surname"]])
    assert names.str.contains("-").any() and names.str.contains("'").any()
    assert names.map(lambda n: unicodedata.normalize("NFKD", n) != n).any()
    kids = roster[roster["role"] == "child"]
    twins = kids.groupby(["family_ref", "date_of_birth"]).size()
    assert (twins >= 2).any()
    assert roster.duplicated(["forename", "surname"], keep=False).sum() > 0
    ages = (ON - roster["date_of_birth"].map(_date)).map(lambda d: d.days / 365.25)
    assert ((ages >= 10) & (ages < 18)).any() and ((ages >= 18) & (ages < 25)).any()
    sizes = roster.groupby("family_ref")["role"].value_counts().unstack(fill_value=0)
    assert (sizes["adult"] == 1).any() and (sizes["child"] >= 4).any()

    truth = read(borough / "truth" / "records.csv")
    assert ((truth["person_ref"] == "") & (truth["valid"] == "Y")).any()  # people on no roster
    persons = read(borough / "truth" / "persons.csv")
    assert set(persons["consent_state"]) == {"given", "refused", "withdrawn", "none"}
    consent = feed(borough, "consent")
    tfp = consent[consent["purpose"] == "tfp_evaluation"].sort_values("recorded_at")
    history = tfp.groupby("person_ref")["status"].agg(list)
    assert history.map(lambda h: h[:2] == ["given", "withdrawn"]).any()  # withdrawn after an earlier given

    # partner copies with nicknames, day/month swaps and sloppy postcodes
    by_ref = roster.set_index("person_ref")
    copies = feed(borough, "incidents").assign(person_ref=truth.loc[truth["dataset"] == "incidents",
                                                                    "person_ref"].to_numpy())
    copies = pd.concat([copies, feed(borough, "attendance").assign(
        person_ref=truth.loc[truth["dataset"] == "attendance", "person_ref"].to_numpy())])
    copies = copies[copies["person_ref"] != ""]
    real = by_ref.loc[copies["person_ref"]]
    nick = [f in NICKNAMES.get(r, ()) for f, r in zip(copies["forename"], real["forename"], strict=True)]
    assert any(nick)
    swapped = [c[:4] == r[:4] and c[5:7] == r[8:10] and c[8:10] == r[5:7] and c != r
               for c, r in zip(copies["date_of_birth"], real["date_of_birth"], strict=True)]
    assert any(swapped)
    assert copies["postcode"].str.contains("[a-z]").any()
    moved = copies["postcode"].map(normalise_postcode).to_numpy() != real["postcode"].to_numpy()
    assert (moved & (copies["postcode"] != "").to_numpy()).any()

    # section 10: victims of asb in the window, rent arrears on, above and below 500 and blank
    incidents = feed(borough, "incidents")
    assert ((incidents["category"] == "asb") & (incidents["role"] == "victim")
            & (incidents["incident_date"].map(_date) > add_months(ON, -12))).any()
    assert {"offender", "suspect", "perpetrator", "subject"} <= set(incidents.loc[incidents["category"] == "asb", "role"])
    arrears = feed(borough, "tenancy_events")
    amounts = arrears.loc[arrears["event"] == "rent_arrears", "arrears_amount"]
    numbers = pd.to_numeric(amounts, errors="coerce")
    assert (amounts == "").any() and (numbers == 500).any() and (numbers < 500).any() and (numbers > 500).any()

    families = read(borough / "truth" / "families.csv")
    eligible = (families["eligible"] == "1").mean()
    assert 0.25 < eligible < 0.75
    for flag in FLAGS:
        assert (families[flag] == "1").mean() > 0.05, flag


# ------------------------------------------------------------------ truth_flags by hand
def test_month_arithmetic_clamps_to_month_end():
    assert add_months(date(2024, 2, 29), -12) == date(2023, 2, 28)
    assert add_months(date(2023, 3, 31), 11) == date(2024, 2, 29)
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert add_months(date(2024, 12, 15), 1) == date(2025, 1, 15)
    assert add_months(date(2024, 1, 15), -1) == date(2023, 12, 15)


def test_last_terms_are_the_three_that_ended_on_or_before_r():
    assert last_terms_ended(date(2024, 2, 29)) == ["2022-SPR", "2022-SUM", "2023-AUT"]
    assert last_terms_ended(date(2024, 3, 31)) == ["2022-SUM", "2023-AUT", "2023-SPR"]


def _roster(*people: tuple[str, str, str]) -> pd.DataFrame:
    """(family_ref, person_ref, date_of_birth) rows of a roster."""
    return pd.DataFrame([{"family_ref": f, "person_ref": p, "date_of_birth": dob, "programme_status": "comparison"}
                         for f, p, dob in people])


def _frame(dataset: str, rows: list[dict[str, str]]) -> pd.DataFrame:
    columns = list(dict.fromkeys([*DATASETS[dataset].columns, "person_ref"]))
    return pd.DataFrame([{c: row.get(c, "") for c in columns} for row in rows], columns=columns)


def _flags(roster, records=None, needs=None, r=ON, **kw) -> dict[str, dict[str, int]]:
    needs = needs if needs is not None else _frame("needs", [])
    out = truth_flags(roster, needs, records or {}, r, **kw)
    return {row["family_ref"]: row for row in out.to_dict("records")}


def test_window_excludes_exactly_twelve_months_before_r_and_includes_the_day_after():
    roster = _roster(("OUT", "a", "1980-05-01"), ("IN", "b", "1980-05-01"), ("FUT", "c", "1980-05-01"),
                     ("IN", "b-child", "2015-05-01"))
    incidents = _frame("incidents", [
        {"person_ref": "a", "incident_date": "2023-02-28", "category": "asb", "role": "subject"},
        {"person_ref": "b", "incident_date": "2023-03-01", "category": "asb", "role": "subject"},
        {"person_ref": "c", "incident_date": "2024-03-01", "category": "domestic_abuse", "role": "victim"},
    ])
    needs = _frame("needs", [
        {"person_ref": "a", "need": "mental_health", "start_date": "2020-01-01", "end_date": "2023-02-28"},
        {"person_ref": "b", "need": "mental_health", "start_date": "2020-01-01", "end_date": "2023-03-01"},
    ])
    flags = _flags(roster, {"incidents": incidents}, needs)
    assert (flags["OUT"]["crime_asb"], flags["OUT"]["health"]) == (0, 0)
    assert (flags["IN"]["crime_asb"], flags["IN"]["health"]) == (1, 1)
    assert flags["IN"]["eligible"] == 1 and flags["IN"]["problem_count"] == 2
    assert flags["FUT"]["domestic_abuse"] == 0  # dated after R: ignored


def test_offender_age_is_taken_on_the_incident_date_from_the_roster():
    roster = _roster(("T18", "a", "2005-06-15"), ("T17", "b", "2005-06-15"), ("T10", "c", "2013-06-15"),
                     ("T9", "d", "2013-06-16"), ("NP", "e", "2008-01-01"))
    offence = {"category": "offence", "role": "offender", "proven": "Y", "incident_date": "2023-06-15",
               "date_of_birth": "1990-01-01"}  # the partner's own (wrong) date of birth is not used
    incidents = _frame("incidents", [
        {**offence, "person_ref": "a"},  # 18th birthday: too old
        {**offence, "person_ref": "b", "incident_date": "2023-06-14"},  # 17, though 18 at R
        {**offence, "person_ref": "c"},  # 10th birthday: counts
        {**offence, "person_ref": "d"},  # the day before the 10th birthday
        {**offence, "person_ref": "e", "proven": "N"},
    ])
    flags = _flags(roster, {"incidents": incidents})
    assert {f: flags[f]["crime_asb"] for f in flags} == {"T18": 0, "T17": 1, "T10": 1, "T9": 0, "NP": 0}


def test_attendance_counts_only_the_last_three_terms_ended_on_or_before_r():
    roster = _roster(("RUN", "a", "2012-01-01"), ("LAST", "b", "2012-01-01"), ("OLD", "c", "2012-01-01"),
                     ("EDGE", "d", "2012-01-01"), ("LOW", "e", "2012-01-01"), ("FTE", "f", "2012-01-01"),
                     ("ADULT", "g", "2005-01-01"))

    def term(person, code, possible, missed, fte="0"):
        return {"person_ref": person, "term": code, "sessions_possible": str(possible),
                "sessions_missed": str(missed), "fixed_term_exclusions": fte,
                "permanent_exclusion": "N", "alternative_provision": "N"}

    attendance = _frame("attendance", [
        term("a", "2023-SPR", 100, 60), term("a", "2023-AUT", 140, 0),  # term still running at R: ignored
        term("b", "2023-AUT", 140, 30), term("b", "2022-SUM", 130, 0),
        term("c", "2021-SUM", 130, 100), term("c", "2022-SPR", 120, 0),  # fourth-last term: ignored
        term("d", "2022-SPR", 120, 12), term("d", "2022-SUM", 130, 13), term("d", "2023-AUT", 140, 14),
        term("e", "2022-SPR", 120, 11), term("e", "2022-SUM", 130, 13), term("e", "2023-AUT", 140, 14),
        term("f", "2022-SUM", 130, 0, "1"), term("f", "2023-AUT", 140, 0, "2"),
        term("g", "2023-AUT", 140, 70),  # 19 at R: not a child
    ])
    flags = _flags(roster, {"attendance": attendance})
    got = {f: flags[f]["school_attendance"] for f in flags}
    assert got == {"RUN": 0, "LAST": 1, "OLD": 0, "EDGE": 1, "LOW": 0, "FTE": 1, "ADULT": 0}
    # on 31 March the spring term has ended and counts
    later = _flags(roster, {"attendance": attendance}, r=date(2024, 3, 31))
    assert later["RUN"]["school_attendance"] == 1


def test_orders_claims_and_needs_active_at_r_or_in_the_window():
    roster = _roster(("REL_IN", "a", "1980-01-01"), ("REL_OUT", "b", "1980-01-01"), ("NOPARENT", "c", "1980-01-01"),
                     ("ORD_IN", "d", "1980-01-01"), ("ORD_OUT", "e", "1980-01-01"),
                     ("NEET24", "f", "1999-02-28"), ("NEET25", "g", "1999-02-28"), ("CHILD18", "h", "2006-02-28"))
    case = {"start_date": "2022-01-01", "parenting_responsibility": "Y"}
    cases = _frame("cases", [
        {**case, "person_ref": "a", "order_type": "custody", "release_date": "2025-02-28"},
        {**case, "person_ref": "b", "order_type": "custody", "release_date": "2025-03-01"},
        {**case, "person_ref": "c", "order_type": "licence", "parenting_responsibility": "N"},
        {**case, "person_ref": "d", "order_type": "community_order", "end_date": "2024-02-29"},
        {**case, "person_ref": "e", "order_type": "community_order", "end_date": "2024-02-28"},
    ])
    benefits = _frame("benefits", [
        {"person_ref": "d", "benefit": "jsa", "out_of_work": "Y", "claim_start": "2022-01-01",
         "claim_end": "2024-02-29"},
        {"person_ref": "e", "benefit": "jsa", "out_of_work": "Y", "claim_start": "2022-01-01",
         "claim_end": "2024-02-28"},
        {"person_ref": "a", "benefit": "uc", "out_of_work": "N", "claim_start": "2022-01-01"},
    ])
    needs = _frame("needs", [
        {"person_ref": "f", "need": "neet", "start_date": "2023-06-01"},
        {"person_ref": "g", "need": "neet", "start_date": "2023-06-01"},  # 25 on R
        {"person_ref": "g", "need": "neet", "start_date": "2023-06-01"},
        {"person_ref": "h", "need": "child_in_need", "start_date": "2023-06-01"},  # 18 on R: an adult
    ])
    roster.loc[roster["person_ref"] == "g", "date_of_birth"] = "1999-02-28"
    roster.loc[roster["person_ref"] == "f", "date_of_birth"] = "1999-03-01"
    flags = _flags(roster, {"cases": cases, "benefits": benefits}, needs)
    crime = {f: flags[f]["crime_asb"] for f in ("REL_IN", "REL_OUT", "NOPARENT", "ORD_IN", "ORD_OUT")}
    assert crime == {"REL_IN": 1, "REL_OUT": 0, "NOPARENT": 0, "ORD_IN": 1, "ORD_OUT": 0}
    work = {f: flags[f]["worklessness"] for f in ("REL_IN", "ORD_IN", "ORD_OUT", "NEET24", "NEET25")}
    assert work == {"REL_IN": 0, "ORD_IN": 1, "ORD_OUT": 0, "NEET24": 1, "NEET25": 0}
    assert flags["CHILD18"]["children_need_help"] == 0


def test_section_10_refinements():
    """asb victims, the new need codes, min_rent_arrears and the dependent child (contract section 10)."""
    roster = _roster(*((f"ASB_{role}", f"asb-{role}", "1980-01-01")
                       for role in ("offender", "suspect", "perpetrator", "subject", "victim")),
                     ("CME", "cme", "2012-01-01"), ("CME_ADULT", "cme-a", "2005-01-01"),
                     ("S47", "s47", "2012-01-01"), ("S47_ADULT", "s47-a", "2005-01-01"),
                     ("NEWMUM", "mum", "2004-01-01"), ("PHYS", "phys", "1960-01-01"),
                     ("ARR_LOW", "low", "1980-01-01"), ("ARR_EDGE", "edge", "1980-01-01"),
                     ("ARR_BLANK", "blank", "1980-01-01"), ("NOTICE", "notice", "1980-01-01"))
    incidents = _frame("incidents", [
        {"person_ref": f"asb-{role}", "incident_date": "2023-10-01", "category": "asb", "role": role}
        for role in ("offender", "suspect", "perpetrator", "subject", "victim")])
    needs = _frame("needs", [
        {"person_ref": ref, "need": need, "start_date": "2023-10-01"}
        for ref, need in (("cme", "child_missing_education"), ("cme-a", "child_missing_education"),
                          ("s47", "section_47"), ("s47-a", "section_47"), ("mum", "vulnerable_new_mother"),
                          ("phys", "physical_health"))])
    tenancy = _frame("tenancy_events", [
        {"person_ref": ref, "event": event, "event_date": "2023-10-01", "arrears_amount": amount}
        for ref, event, amount in (("low", "rent_arrears", "499.99"), ("edge", "rent_arrears", "500.00"),
                                   ("blank", "rent_arrears", ""), ("notice", "notice_seeking_possession", "10.00"))])
    records = {"incidents": incidents, "tenancy_events": tenancy}
    flags = _flags(roster, records, needs)
    assert {f for f in flags if flags[f]["crime_asb"]} == {"ASB_offender", "ASB_suspect", "ASB_perpetrator",
                                                          "ASB_subject"}
    assert {f for f in flags if flags[f]["school_attendance"]} == {"CME"}
    assert {f for f in flags if flags[f]["children_need_help"]} == {"S47"}
    assert {f for f in flags if flags[f]["health"]} == {"NEWMUM", "PHYS"}
    assert {f for f in flags if flags[f]["worklessness"]} == {"ARR_LOW", "ARR_EDGE", "ARR_BLANK", "NOTICE"}
    threshold = _flags(roster, records, needs, min_rent_arrears=500)
    assert {f for f in threshold if threshold[f]["worklessness"]} == {"ARR_EDGE", "NOTICE"}


def test_eligible_only_with_a_counted_child_at_r():
    roster = _roster(("KIDLESS", "a", "1980-01-01"), ("KID17", "b", "1980-01-01"), ("KID17", "b-c", "2006-03-01"),
                     ("KID18", "c", "1980-01-01"), ("KID18", "c-c", "2006-02-28"),
                     ("NOTKEPT", "d", "1980-01-01"), ("NOTKEPT", "d-c", "2015-01-01"))
    needs = _frame("needs", [
        {"person_ref": ref, "need": need, "start_date": "2023-10-01"}
        for ref in ("a", "b", "c", "d") for need in ("mental_health", "domestic_abuse")])
    flags = _flags(roster, needs=needs)
    assert {f: flags[f]["eligible"] for f in flags} == {"KIDLESS": 0, "KID17": 1, "KID18": 0, "NOTKEPT": 1}
    assert {f: flags[f]["problem_count"] for f in flags} == dict.fromkeys(flags, 2)
    kept = _flags(roster, needs=needs, kept={"a", "b", "b-c", "c", "c-c", "d"})
    assert kept["NOTKEPT"]["eligible"] == 0 and kept["KID17"]["eligible"] == 1


def test_only_kept_people_count_and_families_without_any_are_omitted():
    roster = _roster(("F1", "a", "1980-01-01"), ("F1", "b", "1982-01-01"), ("F2", "c", "1980-01-01"))
    incidents = _frame("incidents", [
        {"person_ref": "a", "incident_date": "2023-10-01", "category": "asb", "role": "subject"},
        {"person_ref": "", "incident_date": "2023-10-01", "category": "domestic_abuse", "role": "victim"},
    ])
    flags = _flags(roster, {"incidents": incidents}, kept={"b"})
    assert list(flags) == ["F1"] and flags["F1"]["crime_asb"] == 0
    assert _flags(roster, {"incidents": incidents})["F1"]["crime_asb"] == 1


def test_consent_state_is_the_latest_event_with_refusal_winning_a_tie():
    roster = _roster(("F", "a", "1980-01-01"), ("F", "b", "1980-01-01"), ("F", "c", "1980-01-01"),
                     ("F", "d", "1980-01-01"))
    consent = pd.DataFrame([
        ("1", "a", "tfp_evaluation", "given", "2023-01-01T10:00:00"),
        ("2", "a", "tfp_evaluation", "withdrawn", "2023-06-01T10:00:00"),
        ("3", "b", "tfp_evaluation", "given", "2023-06-01T10:00:00"),
        ("4", "b", "tfp_evaluation", "refused", "2023-06-01T10:00:00"),
        ("5", "c", "service", "given", "2023-06-01T10:00:00"),
        ("6", "d", "tfp_evaluation", "given", "2023-06-01T10:00:00"),
        ("7", "d", "tfp_evaluation", "withdrawn", "2024-03-01T09:00:00"),  # after R
    ], columns=list(DATASETS["consent"].columns))
    states = consent_states(consent, roster, ON).set_index("person_ref")
    assert states["consent_state"].to_dict() == {"a": "withdrawn", "b": "refused", "c": "none", "d": "given"}
    assert states.loc["a", "consent_state_on"] == "2023-06-01" and states.loc["c", "consent_state_on"] == ""
    assert kept_persons(states.reset_index(), "consent") == {"d"}
    assert kept_persons(states.reset_index(), "public_task") == {"c", "d"}
