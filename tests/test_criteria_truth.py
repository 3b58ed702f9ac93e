"""The criteria SQL against the independent pandas reading of the rules (tfp_dev.truth), on generated
boroughs of 2,000 families with three seeds (issue 19: "the truth's independent implementation agrees
with the SQL"), on SQLite and on PostgreSQL.

Each borough is staged as the stages before criteria would leave it with perfect linkage (every valid
record linked to its true person, criteria_helpers.load_generated), so any difference is a difference
of rules, not of linkage. Besides the default config, each borough is judged with
``criteria.min_rent_arrears: 500`` too, since the generator draws arrears on, above and below 500.00.
"""

from __future__ import annotations

from datetime import date

import pytest

from criteria_helpers import CRITERIA, differences, load_generated
from tfp.config import Criteria
from tfp.criteria import compute_family_flags
from tfp.warehouse import FLAGS, connect

FAMILIES = 2000
# three seeds, three reference dates: a month end in the summer term, a leap day, a day mid-autumn term.
# They share one warehouse, newest first: the files of a borough loaded earlier are dated after the next
# one's R, so its as-of reads never see them (family and record ids repeat from borough to borough).
BOROUGHS = ((32, date(2024, 6, 30)), (31, date(2024, 2, 29)), (33, date(2023, 11, 15)))
ARREARS = 500


@pytest.fixture(scope="module")
def boroughs(tmp_path_factory):
    """The three generated boroughs (generated once for both databases), with the truth at the
    ``min_rent_arrears`` threshold written beside the generator's own truth files."""
    from tfp_dev.generate import generate
    from tfp_dev.truth import (
        consent_states,
        ever_withdrawn,
        family_flags,
        kept_persons,
        person_flags,
        read_borough,
    )

    out = []
    for seed, on in BOROUGHS:
        folder = tmp_path_factory.mktemp(f"borough_{seed}")
        generate(folder, families=FAMILIES, seed=seed, on=on)
        roster, needs, consent, records = read_borough(folder, on)
        hits = person_flags(roster, needs, records, on, min_rent_arrears=ARREARS)
        counted = set(roster["person_ref"]) - ever_withdrawn(consent, on)
        kept = kept_persons(consent_states(consent, roster, on), "consent")
        for name, who in (("families_arrears", counted), ("families_consent_arrears", kept)):
            family_flags(roster, hits, on, kept=who).to_csv(folder / "truth" / f"{name}.csv", index=False,
                                                            lineterminator="\n")
        out.append((folder, on))
    return out


def _read(path):
    import pandas as pd

    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_the_boroughs_exercise_the_refinements(boroughs):
    """What the comparison below must cover is there: families with two problems but no counted
    child (not eligible), and a threshold that changes worklessness for some family."""
    for folder, _ in boroughs:
        truth = _read(folder / "truth" / "families.csv")
        assert ((truth["problem_count"].astype(int) >= 2) & (truth["eligible"] == "0")).sum() >= 20
        assert (truth["eligible"] == "1").sum() >= 200
        above = _read(folder / "truth" / "families_arrears.csv")
        assert (above["worklessness"] != truth["worklessness"]).sum() >= 3


@pytest.mark.slow
def test_sql_agrees_with_the_truth_on_three_generated_boroughs(boroughs, warehouse_url):
    threshold = Criteria(**{**CRITERIA.model_dump(), "min_rent_arrears": ARREARS})
    engine = connect(warehouse_url)
    problems: list[str] = []
    for folder, on in boroughs:
        load_generated(engine, folder, on)
        truth = folder / "truth"
        for criteria, suffix in ((CRITERIA, ""), (threshold, "_arrears")):
            counts = compute_family_flags(engine, on, criteria, scope="all")
            compute_family_flags(engine, on, criteria, scope="kept")
            assert counts["families_assessed"] >= FAMILIES * 0.9
            assert all(counts[flag] > 0 for flag in FLAGS)
            problems += [f"{on} {suffix or 'default'} {p}" for p in differences(engine, on, "all",
                                                                              truth / f"families{suffix}.csv")]
            problems += [f"{on} {suffix or 'default'} {p}" for p in differences(engine, on, "kept",
                                                                              truth / f"families_consent{suffix}.csv")]
        problems += [f"{on} judged per person: {p}" for p in _judged_per_person_differences(engine, on)]
    assert problems == []


def _judged_per_person_differences(engine, on: date) -> list[str]:
    """The rules with each person judged at a date of their own (what the progress file runs) against the
    rules run once per date: half the families judged at R, the other half a year and a season earlier."""
    from sqlalchemy import text

    from tfp.criteria import (
        CRITERIA_DATASETS,
        _create_counted_persons,
        _drop_temporary_tables,
        _statement,
        create_judged_persons,
        criteria_parameters,
        flag_sql,
        judged_per_person_sql,
    )
    from tfp.current import create_current_tables

    earlier = date(on.year - 1, 1 + (on.month + 5) % 12, 1)
    out = []
    with engine.begin() as conn:
        create_current_tables(conn, on, CRITERIA_DATASETS)
        _create_counted_persons(conn, on, "all")
        members = dict(conn.execute(text(
            "SELECT f.person_ref, MIN(f.family_ref) FROM cur_families f JOIN counted_persons c "
            "ON c.person_ref = f.person_ref GROUP BY f.person_ref")).all())
        order = {family: i for i, family in enumerate(sorted(set(members.values())))}
        at = {person: on if order[family] % 2 else earlier for person, family in members.items()}
        expected: dict[str, set[str]] = {flag: set() for flag in FLAGS}
        for day in (on, earlier):
            conn.execute(text("DELETE FROM counted_persons"))
            conn.execute(text("INSERT INTO counted_persons (person_ref) VALUES (:p)"),
                         [{"p": p} for p, d in at.items() if d == day])
            params = criteria_parameters(day, CRITERIA, night=on)
            for flag in FLAGS:
                expected[flag] |= set(conn.execute(_statement(flag_sql(flag)), params).scalars())
        create_judged_persons(conn, at, CRITERIA)
        params = criteria_parameters(on, CRITERIA)
        for flag in FLAGS:
            got = set(conn.execute(_statement(judged_per_person_sql(flag_sql(flag))), params).scalars())
            assert expected[flag], f"no family has {flag} at either date: nothing compared"
            if got != expected[flag]:
                out.append(f"{flag}: {len(got - expected[flag])} extra, {len(expected[flag] - got)} missing")
        _drop_temporary_tables(conn)
    return out


def test_sql_agrees_with_the_truth_on_a_borough_with_the_health_source(tmp_path, warehouse_url):
    """Contract section 10's health feed: the SQL's health flag (needs, treatment episodes, mental-health
    contacts) against the pandas truth, on a borough generated with health on; the feed must decide the
    flag for some families, or the comparison would not test it."""
    from tfp_dev.generate import generate
    from tfp_dev.truth import person_flags, read_borough

    on = date(2024, 6, 30)
    generate(tmp_path, families=300, seed=41, on=on, health=True)
    roster, needs, _, records = read_borough(tmp_path, on)
    assert len(records["treatment_episodes"]) and len(records["mental_health_contacts"])
    with_feed = person_flags(roster, needs, records, on)["health"]
    without = person_flags(roster, needs, {d: f for d, f in records.items()
                                           if d not in ("treatment_episodes", "mental_health_contacts")}, on)["health"]
    assert len(with_feed - without) >= 5
    engine = connect(warehouse_url)
    load_generated(engine, tmp_path, on)
    problems = []
    for scope, name in (("all", "families.csv"), ("kept", "families_consent.csv")):
        compute_family_flags(engine, on, CRITERIA, scope=scope)
        problems += differences(engine, on, scope, tmp_path / "truth" / name)
    problems += [f"judged per person: {p}" for p in _judged_per_person_differences(engine, on)]
    assert problems == []
