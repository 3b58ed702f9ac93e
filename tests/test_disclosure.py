"""Disclosure across cells and across nights (contract section 10, issue 13 items 9 and 10).

Item 9: the summary's [c] cells must not be recoverable by differencing (intervention + comparison = all)
or any other relation a recipient knows. The intervals here are computed by the test itself: exhaustively
for one row, and as small integer programs for the whole table, from the published CSV alone.

Item 10: a person's released quasi-identifiers never become finer than on a night released before, over a
sequence of nights whose roster changes so that k-anonymity would generalise differently each night.
"""

from __future__ import annotations

import csv
import io
import random
import re
from datetime import date, datetime, timedelta

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp
from sqlalchemy import func, insert, select
from test_anonymise import config, land

from tfp.anonymise import (
    QUASI_IDENTIFIERS,
    SUMMARY_MEASURES,
    SUMMARY_STATUSES,
    build_outputs,
    disclose,
    person_token,
    protect_summary,
    record_release,
    summary_relations,
)
from tfp.config import load_keys
from tfp.consent import compute_consent
from tfp.retention import PERSONAL_TABLES, programme_end, withdrawn
from tfp.warehouse import FLAGS, family_flags, released_generalisation

CELLS = [(m, s) for m in SUMMARY_MEASURES for s in SUMMARY_STATUSES]


# -- what a recipient can work out from a published summary ------------------------------------------

def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def marks_of(summary: str) -> dict[tuple[str, str], str]:
    return {(r["measure"], r["programme_status"]): r["count"] for r in parse(summary)}


def possible(mark: str, s: int, r: int) -> tuple[int, float]:
    """The counts a published mark can stand for, written here from contract section 7: 0 is 0 (or a count
    >= s rounding to 0), v is a count >= s within half a rounding base of v (halves up), [c] is >= 1
    (a secondary [c] can be any size)."""
    if mark == "[c]":
        return 1, float("inf")
    v = int(mark)
    hits = [n for n in range(max(s, v - r), v + r + 1) if (2 * n + r) // (2 * r) * r == v]
    if v == 0:
        return 0, max(hits, default=0)
    return min(hits), max(hits)


def recipient_relations(min_problems: int) -> list[tuple[dict, str]]:
    """Everything the recipient knows ties cells together, written out again for the test."""
    rel: list[tuple[dict, str]] = []
    for m in SUMMARY_MEASURES:
        rel.append(({(m, "intervention"): 1, (m, "comparison"): 1, (m, "all"): -1}, "=="))
    for s in SUMMARY_STATUSES:
        rel.append(({("families_assessed", s): 1, ("families_eligible", s): -1}, ">="))
        for f in FLAGS:
            rel.append(({("families_assessed", s): 1, (f, s): -1}, ">="))
        rel.append(({**{(f, s): 1 for f in FLAGS}, ("families_eligible", s): -min_problems}, ">="))
    rel.append(({("persons_submitted", "intervention"): 1, ("families_assessed", "intervention"): -1}, ">="))
    rel.append(({("persons_submitted", "comparison"): 1, ("families_eligible", "comparison"): -1}, ">="))
    return rel


def intervals(marks: dict, s: int, r: int, min_problems: int) -> dict[tuple[str, str], tuple[float, float]]:
    """For each [c] cell, the least and greatest integer count it can take in any table that agrees with
    every published mark and every relation (integer programs over the 27 cells)."""
    index = {c: i for i, c in enumerate(CELLS)}
    lo, hi = zip(*(possible(marks[c], s, r) for c in CELLS), strict=True)
    big = 10**7
    bounds = Bounds(list(lo), [min(h, big) for h in hi])
    rel = recipient_relations(min_problems)
    a = np.zeros((len(rel), len(CELLS)))
    for row, (coefficients, _) in enumerate(rel):
        for cell, k in coefficients.items():
            a[row, index[cell]] = k
    upper = [0 if sense == "==" else np.inf for _, sense in rel]
    constraint = LinearConstraint(a, np.zeros(len(rel)), upper)
    out = {}
    for cell in CELLS:
        if marks[cell] != "[c]":
            continue
        ends = []
        for sign in (1, -1):
            c = np.zeros(len(CELLS))
            c[index[cell]] = sign
            res = milp(c, constraints=[constraint], integrality=np.ones(len(CELLS)), bounds=bounds)
            assert res.status == 0, res.message
            end = round(sign * res.fun)
            ends.append(float("inf") if end >= big // 2 else end)
        out[cell] = (ends[0], ends[1])
    return out


def row_interval_exhaustive(marks3: tuple[str, str, str], s: int, r: int, top: int = 200) -> dict[int, set[int]]:
    """One measure alone, by enumeration: every (intervention, comparison) pair whose sum is consistent
    with all three marks; for each [c] position, the set of values it takes."""
    ranges = [possible(m, s, r) for m in marks3]
    values: dict[int, set[int]] = {i: set() for i, m in enumerate(marks3) if m == "[c]"}
    for i in range(top):
        for c in range(top):
            triple = (i, c, i + c)
            if all(lo <= v <= hi for v, (lo, hi) in zip(triple, ranges, strict=True)):
                for position in values:
                    values[position].add(triple[position])
    return values


# -- the counts of a random borough ------------------------------------------------------------------

def random_counts(rng: random.Random, min_problems: int) -> dict[tuple[str, str], int]:
    """The summary's true counts for random families (so that every relation holds as in real data)."""
    counts = dict.fromkeys(CELLS, 0)
    scale = rng.choice([3, 8, 20, 60])
    for status, n in (("intervention", rng.randint(0, scale)), ("comparison", rng.randint(0, 3 * scale))):
        rates = [rng.choice([0.02, 0.1, 0.3, 0.6]) for _ in FLAGS]
        for _ in range(n):
            flags = {f for f, p in zip(FLAGS, rates, strict=True) if rng.random() < p}
            eligible = len(flags) >= min_problems
            persons = rng.randint(1, 5) if status == "intervention" or eligible else 0
            for st in (status, "all"):
                counts["families_assessed", st] += 1
                counts["families_eligible", st] += eligible
                for f in flags:
                    counts[f, st] += 1
                counts["persons_submitted", st] += persons
    return counts


# Twelve boroughs in the fast subset; all sixty in the whole suite (each solves dozens of integer programs).
@pytest.mark.parametrize("seed", [*range(12), *(pytest.param(s, marks=pytest.mark.slow) for s in range(12, 60))])
def test_no_suppressed_cell_can_be_narrowed_below_suppress_below(seed):
    rng = random.Random(seed)
    s, r = rng.choice([(10, 1), (10, 5), (5, 1), (5, 5), (10, 10), (3, 2), (10, 3)])
    min_problems = rng.choice([1, 2, 3])
    counts = random_counts(rng, min_problems)
    marks = protect_summary(counts, s, r, summary_relations(min_problems))

    assert list(marks) == CELLS
    for cell, n in counts.items():  # primary rules and rounding untouched; secondary only adds [c]
        if marks[cell] != "[c]":
            assert marks[cell] == disclose(n, s, r)
        else:
            assert n > 0
        if 0 < n < s:
            assert marks[cell] == "[c]"
    for cell, (lo, hi) in intervals(marks, s, r, min_problems).items():
        assert lo <= counts[cell] <= hi, cell  # the model is honest: the truth is inside
        assert hi - lo >= s, (cell, lo, hi, counts[cell])
    for m in SUMMARY_MEASURES:  # and each row alone, by brute force (no other relation)
        row = tuple(marks[m, st] for st in SUMMARY_STATUSES)
        if "[c]" in row and counts[m, "all"] < 150:
            for position, seen in row_interval_exhaustive(row, s, r, top=300).items():
                assert counts[m, SUMMARY_STATUSES[position]] in seen
                assert max(seen) - min(seen) >= s, (m, position, row)
    assert protect_summary(counts, s, r, summary_relations(min_problems)) == marks  # deterministic


def test_a_relation_the_counts_break_is_not_relied_on():
    counts = dict.fromkeys(CELLS, 20)
    counts["families_eligible", "intervention"] = 3
    counts["families_eligible", "all"] = 23
    marks = protect_summary(counts, 10, 1, [({("families_eligible", "all"): 1}, 0)])  # "== 0": false
    assert [marks["families_eligible", s] for s in SUMMARY_STATUSES] == ["[c]", "20", "23"]


# -- through build_outputs ---------------------------------------------------------------------------

def seed_night(engine, night: date, people: list[tuple], families: dict[str, tuple[str, set[str]]],
               min_problems: int = 2) -> None:
    """The roster of ``night`` (a families file dated that night) and the kept family flags of that night.

    people: (person_ref, family_ref, year, sex, postcode); families: family_ref -> (status, flags).
    """
    with engine.begin() as conn:
        land(conn, "families", night, [
            {"record_id": f"r{ref}", "person_ref": ref, "family_ref": fam, "programme_status": families[fam][0],
             "forename": "Ann", "surname": f"Surname{ref}", "date_of_birth": date(year, 6, 15), "sex": sex,
             "postcode": postcode, "role": "adult",
             "attached_date": date(2024, 5, 1) if families[fam][0] == "intervention" else None}
            for ref, fam, year, sex, postcode in people
        ])
    compute_consent(engine, night, "public_task")
    with engine.begin() as conn:
        conn.execute(insert(family_flags), [
            {"reference_date": night, "scope": "kept", "family_ref": fam, "programme_status": status,
             **{f: int(f in on) for f in FLAGS}, "problem_count": len(on), "eligible": int(len(on) >= min_problems)}
            for fam, (status, on) in families.items()
        ])


def test_the_differencing_attack_on_a_delivered_summary_fails(warehouse_url, tmp_path, keys_env):
    """3 intervention and 50 comparison families, suppress_below 10, round_to 1: before the fix the
    summary read [c], 50, 53, and 53 - 50 = 3 recovered the suppressed count exactly."""
    from tfp.warehouse import connect

    engine = connect(warehouse_url)
    night = date(2025, 3, 31)
    families = {f"I{i}": ("intervention", {"health", "worklessness"}) for i in range(3)}
    families |= {f"C{i}": ("comparison", {"health", "crime_asb"} if i < 30 else set()) for i in range(50)}
    people = [(f"P{fam}", fam, 1980, "F", "SW1A 1AA") for fam in families]
    seed_night(engine, night, people, families)
    cfg = config(tmp_path, k=1, suppress_below=10, round_to=1)
    out = build_outputs(engine, night, cfg, load_keys(cfg))

    marks = marks_of(out.summary)
    for m in SUMMARY_MEASURES:
        i, c, a = (marks[m, s] for s in SUMMARY_STATUSES)
        assert not (i == "[c]" and c != "[c]" and a != "[c]"), f"{m}: {a} - {c} recovers intervention"
        assert not (c == "[c]" and i != "[c]" and a != "[c]"), f"{m}: {a} - {i} recovers comparison"
    assert marks["families_assessed", "intervention"] == "[c]"
    for cell, (lo, hi) in intervals(marks, 10, 1, 2).items():
        assert hi - lo >= 10, (cell, lo, hi)
    assert out.published["families_assessed"] == {s: marks["families_assessed", s] for s in SUMMARY_STATUSES}


# -- across nights -----------------------------------------------------------------------------------

def level(column: str, value: str) -> int:
    """How generalised a released value is, read off the value alone."""
    if value == "*":
        return {"year_of_birth": 2, "postcode_district": 2, "sex": 1}[column]
    if column == "year_of_birth":
        return 1 if re.fullmatch(r"\d{4}-\d{4}", value) else 0
    if column == "postcode_district":
        return 0 if re.search(r"\d", value) or value == "" else 1
    return 0


def package(engine, night: date, cfg, keys):
    """What pipeline.package does with the warehouse: build, then (once written) record the release."""
    out = build_outputs(engine, night, cfg, keys)
    record_release(engine, night, out.released)
    return out


def quasi(out, keys) -> dict[str, tuple[str, ...]]:
    return {r["person_token"]: tuple(r[q] for q in QUASI_IDENTIFIERS) for r in parse(out.submission)}


def growing_rosters(rng: random.Random, nights: int) -> list[list[tuple]]:
    """A borough whose roster changes every night: people join (so classes grow and a finer value would
    become k-anonymous) and some leave; each person's own values stay fixed."""
    districts = ["SW1A 1AA", "SW1B 2BB", "SE15 4QF", "N1 9GU"]
    everyone = [(f"P{i:03d}", f"F{i:03d}", rng.choice([1979, 1980, 1981, 1982, 1990]), rng.choice("MF"),
                 rng.choice(districts)) for i in range(120)]
    present: list[tuple] = everyone[:12]
    nightly = []
    for _ in range(nights):
        nightly.append(list(present))
        start = max(int(p[0][1:]) for p in present) + 1
        joining = everyone[start:start + rng.randint(5, 25)]
        leaving = set(rng.sample(range(len(present)), k=min(len(present) // 10, 3)))
        present = [p for i, p in enumerate(present) if i not in leaving] + joining
    return nightly


@pytest.mark.parametrize("seed", range(3))
def test_released_quasi_identifiers_never_become_finer_over_nights(warehouse_url, tmp_path, keys_env, seed):
    from tfp.warehouse import connect

    engine = connect(warehouse_url)
    cfg = config(tmp_path, k=3)
    keys = load_keys(cfg)
    rng = random.Random(seed)
    nights = [date(2025, 3, 1) + timedelta(days=7 * n) for n in range(6)]
    coarsest: dict[str, list[int]] = {}
    for night, roster in zip(nights, growing_rosters(rng, len(nights)), strict=True):
        families = {fam: ("intervention", {"health"}) for _, fam, *_ in roster}
        seed_night(engine, night, roster, families)
        out = package(engine, night, cfg, keys)
        released = quasi(out, keys)
        combos: dict[tuple, int] = {}
        for values in released.values():
            combos[values] = combos.get(values, 0) + 1
        assert min(combos.values()) >= 3  # each night is k-anonymous on its own
        for token, values in released.items():
            levels = [level(q, v) for q, v in zip(QUASI_IDENTIFIERS, values, strict=True)]
            if token in coarsest:
                finer = [q for q, now, before in zip(QUASI_IDENTIFIERS, levels, coarsest[token], strict=True)
                         if now < before]
                assert not finer, f"{night}: {finer} finer than released before"
            coarsest[token] = [max(a, b) for a, b in zip(levels, coarsest.get(token, levels), strict=True)]
    assert len(coarsest) > 50


def test_one_person_stays_as_coarse_as_first_released(warehouse_url, tmp_path, keys_env):
    """The attack: night 1 generalises X (too few alike); night 2 five more alike join, so X's exact
    values would be k-anonymous that night. Before the fix night 2 released X exactly, and the two nights
    together gave a finer X than either night's k-anonymity allowed."""
    from tfp.warehouse import connect

    engine = connect(warehouse_url)
    cfg = config(tmp_path, k=3)
    keys = load_keys(cfg)
    x = ("PX", "FX", 1982, "F", "SW1A 1AA")
    first = [x, ("P1", "F1", 1983, "F", "SW1A 2AA"), ("P2", "F2", 1984, "F", "SW1A 3AA"),
             ("P3", "F3", 1990, "M", "N1 9GU"), ("P4", "F4", 1990, "M", "N1 9GU"), ("P5", "F5", 1990, "M", "N1 9GU")]
    second = first + [(f"Q{i}", f"G{i}", 1982, "F", "SW1A 1AA") for i in range(5)]
    n1, n2 = date(2025, 3, 1), date(2025, 3, 8)
    token = person_token(keys.pseudonym, "PX")
    released = []
    for night, roster in ((n1, first), (n2, second)):
        seed_night(engine, night, roster, {fam: ("intervention", {"health"}) for _, fam, *_ in roster})
        released.append(quasi(package(engine, night, cfg, keys), keys)[token])
    assert released[0] == ("1980-1984", "SW1A", "F")
    assert released[1] == released[0]
    others = quasi(build_outputs(engine, n2, cfg, keys), keys)
    assert others[person_token(keys.pseudonym, "Q0")] == ("1982", "SW1A", "F")  # newcomers keep their detail


def test_reruns_are_byte_identical_and_a_backfill_is_no_finer(warehouse_url, tmp_path, keys_env):
    from tfp.warehouse import connect

    engine = connect(warehouse_url)
    cfg = config(tmp_path, k=3)
    keys = load_keys(cfg)
    rng = random.Random(7)
    nights = [date(2025, 3, 1) + timedelta(days=7 * n) for n in range(4)]
    rosters = growing_rosters(rng, len(nights))
    for night, roster in zip(nights, rosters, strict=True):
        seed_night(engine, night, roster, {fam: ("intervention", {"health"}) for _, fam, *_ in roster})

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(released_generalisation)).scalar() == 0
    build_outputs(engine, nights[1], cfg, keys)  # building is not releasing: nothing is recorded
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(released_generalisation)).scalar() == 0

    # nights 0 and 2 first, then night 1 as a backfill, then every night again
    first = {n: package(engine, nights[n], cfg, keys) for n in (0, 2)}
    first[1] = package(engine, nights[1], cfg, keys)
    first[3] = package(engine, nights[3], cfg, keys)
    for n in (0, 1, 2, 3):
        again = package(engine, nights[n], cfg, keys)
        assert again.submission == first[n].submission and again.summary == first[n].summary, n
    # the backfilled night is no finer than the night released before it
    later, backfill = quasi(first[2], keys), quasi(first[1], keys)
    for token, values in backfill.items():
        if token in later:
            assert all(level(q, a) >= level(q, b) for q, a, b in zip(QUASI_IDENTIFIERS, values, later[token],
                                                                      strict=True)), token


def test_retention_deletes_released_levels(warehouse_url, tmp_path, keys_env):
    from tfp.warehouse import connect

    engine = connect(warehouse_url)
    cfg = config(tmp_path, k=3)
    night = date(2025, 3, 1)
    roster = [(f"P{i}", f"F{i}", 1980 + i % 2, "F", "SW1A 1AA") for i in range(8)]
    seed_night(engine, night, roster, {fam: ("intervention", {"health"}) for _, fam, *_ in roster})
    package(engine, night, cfg, load_keys(cfg))
    with engine.begin() as conn:
        land(conn, "consent", night, [{"record_id": "w1", "person_ref": "P1", "purpose": "tfp_evaluation",
                                       "status": "withdrawn", "recorded_at": datetime(2025, 3, 2, 9, 0)}])

    def people() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(select(released_generalisation.c.person_ref)).scalars())

    assert "P1" in people()
    withdrawn(engine, cfg, date(2025, 3, 3), dry_run=False)
    assert "P1" not in people() and len(people()) == 7
    assert released_generalisation in PERSONAL_TABLES
    programme_end(engine, cfg, cfg.retention.delete_all_after, dry_run=False)
    assert people() == set()


def test_levels_recorded_are_the_levels_released(warehouse_url, tmp_path, keys_env):
    from tfp.warehouse import connect

    engine = connect(warehouse_url)
    cfg = config(tmp_path, k=3)
    keys = load_keys(cfg)
    night = date(2025, 3, 1)
    roster = [(f"P{i}", f"F{i}", 1975 + i, "MF"[i % 2], ["SW1A 1AA", "N1 9GU"][i % 2]) for i in range(9)]
    seed_night(engine, night, roster, {fam: ("intervention", {"health"}) for _, fam, *_ in roster})
    out = package(engine, night, cfg, keys)
    shown = quasi(out, keys)
    with engine.connect() as conn:
        rows = conn.execute(select(released_generalisation)).mappings().all()
    assert {r["release_order"] for r in rows} == {1}
    assert len(rows) == len(shown) == 9
    for r in rows:
        values = shown[person_token(keys.pseudonym, r["person_ref"])]
        assert tuple(level(q, v) for q, v in zip(QUASI_IDENTIFIERS, values, strict=True)) == tuple(
            r[q] for q in QUASI_IDENTIFIERS)
    assert "'P1'" not in repr(out)  # internal refs stay out of any repr that might be logged


def test_the_package_task_records_what_it_packaged(warehouse_url, tmp_path, keys_env):
    """pipeline.package (the DAG's task) writes the files, then the levels; its XCom stays counts only."""
    from helpers import write_config
    from tfp import pipeline
    from tfp.warehouse import connect

    engine = connect(warehouse_url)
    night = date(2025, 3, 31)
    roster = [(f"P{i}", f"F{i}", 1980 + i % 3, "MF"[i % 2], "SW1A 1AA") for i in range(12)]
    seed_night(engine, night, roster, {fam: ("intervention", {"health"}) for _, fam, *_ in roster})
    packaged = pipeline.package(str(write_config(tmp_path, warehouse_url)), night)
    with engine.connect() as conn:
        refs = set(conn.execute(select(released_generalisation.c.person_ref)
                                .where(released_generalisation.c.reference_date == night)).scalars())
    assert refs == {ref for ref, *_ in roster} and packaged["persons_submitted"] == 12
    assert not any(ref in repr(packaged) for ref in ("'P1'", "P11"))
