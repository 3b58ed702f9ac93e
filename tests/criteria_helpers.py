"""Build a tiny warehouse row by row for the criteria tests, and read back the flags.

Rows go in exactly as the stages before criteria leave them: a ``landing_log`` row with status
``staged`` per dataset, typed ``stg_<dataset>`` rows, ``links`` rows for R (``person_ref`` NULL for
an unlinked record) and ``person_consent`` rows.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import insert, select

from tfp.config import Criteria
from tfp.criteria import assess_families, compute_family_flags
from tfp.feeds import DATASETS
from tfp.months import add_months
from tfp.warehouse import FLAGS, connect, family_flags, landing_log, links, person_consent, staging

R = date(2024, 6, 30)
CRITERIA = Criteria(min_problems=2, lookback_months=12, persistent_absence_rate=0.10, fixed_term_exclusions=3)

_PERSON = {"forename": "Test", "surname": "Person", "date_of_birth": date(1980, 1, 1), "sex": "U",
           "postcode": "SW1A 1AA"}


def born(reference: date, years: int, days: int = 0) -> date:
    """A date of birth making someone exactly ``years`` old on ``reference``, shifted ``days`` later."""
    from datetime import timedelta

    return add_months(reference, -12 * years) + timedelta(days=days)


class Warehouse:
    """A warehouse on ``url`` holding only the rows a test adds, all as of reference date ``R``."""

    def __init__(self, url: str, reference_date: date = R):
        self.engine = connect(url)
        self.reference_date = reference_date
        self._rows: dict[str, list[dict]] = defaultdict(list)
        self._links: list[dict] = []
        self._consent: list[dict] = []
        self._next = 0

    def _record_id(self, dataset: str) -> str:
        self._next += 1
        return f"{dataset[:3]}-{self._next:05d}"

    # --- the roster and children's services -------------------------------------------------------
    def person(self, family_ref: str, person_ref: str, date_of_birth: date | None, *, role: str = "adult",
               programme_status: str = "intervention") -> str:
        self._rows["families"].append({
            **_PERSON, "record_id": person_ref, "family_ref": family_ref, "person_ref": person_ref,
            "role": role, "date_of_birth": date_of_birth, "programme_status": programme_status,
            "attached_date": None if programme_status == "comparison" else date(2023, 1, 1),
        })
        return person_ref

    def adult(self, family_ref: str, person_ref: str, age: int = 40, **kw) -> str:
        return self.person(family_ref, person_ref, born(self.reference_date, age, -100), role="adult", **kw)

    def child(self, family_ref: str, person_ref: str, age: int = 12, **kw) -> str:
        return self.person(family_ref, person_ref, born(self.reference_date, age, -100), role="child", **kw)

    def need(self, person_ref: str, need: str, start_date: date, end_date: date | None = None) -> str:
        record_id = self._record_id("needs")
        self._rows["needs"].append({"record_id": record_id, "person_ref": person_ref, "need": need,
                                    "start_date": start_date, "end_date": end_date})
        return record_id

    def consent(self, person_ref: str, kept: bool) -> None:
        self._consent.append({"reference_date": self.reference_date, "person_ref": person_ref,
                              "state": "given" if kept else "refused", "state_on": date(2023, 1, 1),
                              "kept": kept})

    # --- partner records, linked to ``person_ref`` (None: unlinked) ---------------------------------
    def _partner(self, dataset: str, person_ref: str | None, record_id: str | None = None, **values) -> str:
        record_id = record_id or self._record_id(dataset)
        self._rows[dataset].append({**_PERSON, "record_id": record_id, **values})
        self._links.append({"reference_date": self.reference_date, "dataset": dataset, "record_id": record_id,
                            "person_ref": person_ref, "match_probability": None if person_ref is None else 1.0,
                            "method": "unlinked" if person_ref is None else "nino"})
        return record_id

    def incident(self, person_ref: str | None, incident_date: date, category: str = "asb",
                 role: str = "subject", proven: bool | None = None, record_id: str | None = None) -> str:
        return self._partner("incidents", person_ref, record_id, incident_date=incident_date, category=category, role=role,
                             proven=proven)

    def case(self, person_ref: str | None, order_type: str, start_date: date, end_date: date | None = None,
             release_date: date | None = None, parenting_responsibility: bool | None = True,
             record_id: str | None = None) -> str:
        return self._partner("cases", person_ref, record_id, order_type=order_type, start_date=start_date, end_date=end_date,
                             release_date=release_date, parenting_responsibility=parenting_responsibility)

    def tenancy_event(self, person_ref: str | None, event: str, event_date: date,
                      record_id: str | None = None, arrears_amount: float | None = None) -> str:
        return self._partner("tenancy_events", person_ref, record_id, event=event, event_date=event_date, uprn="100000001",
                             tenancy_ref="T1", arrears_amount=arrears_amount)

    def benefit(self, person_ref: str | None, claim_start: date, claim_end: date | None = None,
                out_of_work: bool | None = True, benefit: str = "uc", record_id: str | None = None) -> str:
        return self._partner("benefits", person_ref, record_id, benefit=benefit, out_of_work=out_of_work,
                             claim_start=claim_start, claim_end=claim_end)

    def attendance(self, person_ref: str | None, term: str, possible: int = 100, missed: int = 0,
                   fixed_term_exclusions: int | None = 0, permanent_exclusion: bool | None = False,
                   alternative_provision: bool | None = False, record_id: str | None = None) -> str:
        return self._partner("attendance", person_ref, record_id, term=term, school_urn="100001",
                             sessions_possible=possible, sessions_missed=missed,
                             fixed_term_exclusions=fixed_term_exclusions, exclusion_days=None,
                             permanent_exclusion=permanent_exclusion, alternative_provision=alternative_provision)

    # --- writing and reading -----------------------------------------------------------------------
    def save(self) -> None:
        """Insert what was added since the last save (one staged landing per dataset per save)."""
        with self.engine.begin() as conn:
            for dataset, rows in self._rows.items():
                landing_id = conn.execute(insert(landing_log).values(
                    source=DATASETS[dataset].source, dataset=dataset,
                    file_name=f"{dataset}_{self.reference_date:%Y%m%d}.csv", file_date=self.reference_date,
                    sha256=f"{self._next:064d}", bytes=1, landed_at=datetime.now(UTC),
                    landed_by_run=self.reference_date, status="staged",
                ).returning(landing_log.c.id)).scalar_one()
                columns = staging[dataset].c.keys()
                conn.execute(insert(staging[dataset]), [
                    {k: v for k, v in {**row, "landing_id": landing_id, "file_date": self.reference_date,
                                       "row_number": n}.items() if k in columns}
                    for n, row in enumerate(rows, start=1)
                ])
            if self._links:
                conn.execute(insert(links), self._links)
            if self._consent:
                conn.execute(insert(person_consent), self._consent)
        self._rows.clear()
        self._links.clear()
        self._consent.clear()

    def compute(self, criteria: Criteria = CRITERIA, scope: str = "all") -> dict[str, int]:
        self.save()
        return compute_family_flags(self.engine, self.reference_date, criteria, scope)

    def flags(self, criteria: Criteria = CRITERIA, scope: str = "all") -> dict[str, dict]:
        """family_ref -> its family_flags row, after computing the flags for (R, scope)."""
        self.compute(criteria, scope)
        with self.engine.connect() as conn:
            rows = conn.execute(select(family_flags).where(family_flags.c.reference_date == self.reference_date,
                                                           family_flags.c.scope == scope)).mappings().all()
        return {r["family_ref"]: dict(r) for r in rows}

    def indicators(self, criteria: Criteria = CRITERIA, scope: str = "all") -> dict[str, dict[str, int]]:
        """"<flag>.<indicator>" -> {"families": n, "eligible": m} for (R, scope) (tfp.criteria.assess_families)."""
        self.save()
        return assess_families(self.engine, self.reference_date, criteria, scope).indicators

    def families_with(self, flag: str, criteria: Criteria = CRITERIA, scope: str = "all") -> set[str]:
        assert flag in FLAGS
        return {ref for ref, row in self.flags(criteria, scope).items() if row[flag] == 1}


# --- a generated borough, staged with true links (the truth-vs-SQL comparisons) -----------------

def _typed(dataset: str, row: dict[str, str]) -> dict:
    from tfp.feeds import DATASETS

    d = DATASETS[dataset]
    out: dict = {}
    for column, value in row.items():
        if column not in d.columns:
            continue
        value = value.strip()
        if value == "":
            out[column] = None
        elif column in d.dates:
            out[column] = date.fromisoformat(value)
        elif column in d.datetimes:
            out[column] = datetime.fromisoformat(value).replace(tzinfo=None)
        elif column in d.integers:
            out[column] = int(value)
        elif column in d.decimals:
            out[column] = float(value)
        elif d.codes.get(column) == ("Y", "N"):
            out[column] = value == "Y"
        else:
            out[column] = value
    return out


def load_generated(engine, out: Path, on: date) -> None:
    """Stage every valid row of a generated borough and link each record to its true person."""
    from tfp.feeds import DATASETS, OPTIONAL_SOURCES, PARTNER_DATASETS, file_name

    def read(path: Path) -> list[dict[str, str]]:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f))

    truth = read(out / "truth" / "records.csv")
    with engine.begin() as conn:
        for dataset in ("families", "needs", "consent", *PARTNER_DATASETS):
            d = DATASETS[dataset]
            if d.source in OPTIONAL_SOURCES and not (out / d.source / file_name(dataset, on)).exists():
                continue  # generated without the optional support_services source
            rows = read(out / d.source / file_name(dataset, on))
            if dataset in PARTNER_DATASETS:
                valid = [t for t in truth if t["dataset"] == dataset]
                rows = [r for r, t in zip(rows, valid, strict=True) if t["valid"] == "Y"]
                conn.execute(insert(links), [
                    {"reference_date": on, "dataset": dataset, "record_id": t["record_id"],
                     "person_ref": t["person_ref"] or None, "match_probability": 1.0 if t["person_ref"] else None,
                     "method": "nino" if t["person_ref"] else "unlinked"}
                    for t in valid if t["valid"] == "Y"
                ])
            landing_id = conn.execute(insert(landing_log).values(
                source=d.source, dataset=dataset, file_name=file_name(dataset, on), file_date=on,
                sha256=dataset.ljust(64, "0"), bytes=1, landed_at=datetime.now(UTC), landed_by_run=on,
                status="staged").returning(landing_log.c.id)).scalar_one()
            conn.execute(insert(staging[dataset]), [
                {**_typed(dataset, r), "landing_id": landing_id, "file_date": on, "row_number": n}
                for n, r in enumerate(rows, start=1)
            ])
        persons = read(out / "truth" / "persons.csv")
        conn.execute(insert(person_consent), [
            {"reference_date": on, "person_ref": p["person_ref"], "state": p["consent_state"],
             "state_on": date.fromisoformat(p["consent_state_on"]) if p["consent_state_on"] else None,
             "kept": p["consent_state"] == "given"}
            for p in persons
        ])
        # as staging stores a roster: of anyone who has withdrawn, references only (contract section 10)
        from tfp.retention import ever_withdrawn, scrub_roster

        scrub_roster(conn, ever_withdrawn(conn, on))  # as of on: two boroughs here share refs


def differences(engine, on: date, scope: str, truth_csv: Path) -> list[str]:
    with truth_csv.open(encoding="utf-8", newline="") as f:
        expected = {r["family_ref"]: r for r in csv.DictReader(f)}
    with engine.connect() as conn:
        actual = {r["family_ref"]: r for r in conn.execute(
            select(family_flags).where(family_flags.c.reference_date == on, family_flags.c.scope == scope)
        ).mappings()}
    problems = [f"{scope}: family only in truth" for ref in expected.keys() - actual.keys()]
    problems += [f"{scope}: family only in warehouse" for ref in actual.keys() - expected.keys()]
    for ref in expected.keys() & actual.keys():
        for column in ("programme_status", *FLAGS, "problem_count", "eligible"):
            if str(actual[ref][column]) != expected[ref][column]:
                problems.append(f"{scope}: {column} differs")
    return problems
