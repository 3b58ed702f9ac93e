"""Stage 7: what leaves the building, de-identified (contract section 7).

Tokens and match keys are keyed hashes: without the keys nobody can reverse them or test a
guess, and the recipient can still link the same person across submissions and to other
sources that hold the linkage key. Quasi-identifiers are generalised to k-anonymity, never finer
for a person than on a night released before (tokens are stable, so a recipient can combine
nights), and the aggregate counts go through small-cell suppression, secondary suppression (so
no [c] can be worked out from the other cells and totals) and rounding. Only people kept by the
consent stage are read; nobody else reaches any output.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import logging
import re
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
from sqlalchemy import Engine, delete, func, select, text

from tfp.config import Config, SecretKeys
from tfp.consent import as_date
from tfp.current import current_rows
from tfp.identifiers import (
    is_valid_postcode,
    normalise_name,
    normalise_nhs_number,
    normalise_nino,
    postcode_district,
)
from tfp.progress import PROGRESS_HEADER
from tfp.statuses import ConsentState, FlagScope
from tfp.warehouse import FLAGS, family_flags, insert_rows, person_consent, released_generalisation

log = logging.getLogger(__name__)

SUBMISSION_COLUMNS: tuple[str, ...] = (
    "reference_date", "la_code", "family_token", "person_token", "mk1", "mk2", "mk3", "mk4", "mk5", "mk_nino",
    "mk_upn", "mk_nhs", "role", "sex", "year_of_birth", "postcode_district", "programme_status", "attached_month", *FLAGS,
    "problem_count", "eligible",
)
SUMMARY_COLUMNS: tuple[str, ...] = ("measure", "programme_status", "count")
SUMMARY_MEASURES: tuple[str, ...] = ("families_assessed", "families_eligible", *FLAGS, "persons_submitted")
SUMMARY_STATUSES: tuple[str, ...] = ("intervention", "comparison", "all")
WITHDRAWAL_COLUMNS: tuple[str, ...] = ("person_token", "withdrawn_on")
QUASI_IDENTIFIERS: tuple[str, ...] = ("year_of_birth", "postcode_district", "sex")
SUPPRESSED = "*"


# -- tokens and match keys -------------------------------------------------------------------------

def _hmac_hex(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def person_token(key: bytes, person_ref: str) -> str:
    """HMAC-SHA256(pseudonym key, ``person:`` + person_ref), lowercase hex."""
    return _hmac_hex(key, "person:" + str(person_ref))


def family_token(key: bytes, family_ref: str) -> str:
    """HMAC-SHA256(pseudonym key, ``family:`` + family_ref), lowercase hex."""
    return _hmac_hex(key, "family:" + str(family_ref))


def _text(value: object) -> str:
    """A value as stripped text; "" for None, NaN, NA, NaT."""
    if value is None:
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value).strip()


def _date_or_none(value: object) -> date | None:
    try:
        return as_date(value)
    except ValueError:  # not a date: treated as unknown, like any other missing input
        return None


def _sex(value: object) -> str:
    """M, F or U; an empty or unknown sex is U (contract section 3: an empty sex means U)."""
    sex = _text(value).upper()
    return sex if sex in ("M", "F", "U") else "U"


def match_keys(linkage_key: bytes, forename: object, surname: object, date_of_birth: object, postcode: object,
               sex: object, nino: object, upn: object, nhs_number: object = None) -> dict[str, str]:
    """The eight match keys of contract sections 7 and 10 (``mk_nhs``); a key with any input missing is "".

    Sex is never missing (an unknown sex is ``U``), so mk4 needs only the names and date of birth.
    """
    fore, sur = normalise_name(_text(forename)), normalise_name(_text(surname))
    dob_date = _date_or_none(date_of_birth)
    dob = dob_date.strftime("%Y%m%d") if dob_date else ""
    post = re.sub(r"\s+", "", _text(postcode)).upper()
    nino_value, upn_value = normalise_nino(_text(nino)), re.sub(r"\s+", "", _text(upn)).upper()

    def key(*parts: str) -> str:
        return _hmac_hex(linkage_key, "|".join(parts)) if all(parts) else ""

    return {
        "mk1": key(fore, sur, dob, post),
        "mk2": key(fore[:1], sur, dob, post),
        "mk3": key(fore, sur, dob),
        "mk4": key(fore[:3], sur[:3], dob, _sex(sex)),
        "mk5": key(sur, dob, post),
        "mk_nino": key(nino_value),
        "mk_upn": key(upn_value),
        "mk_nhs": key(normalise_nhs_number(_text(nhs_number))),  # the 10 digits
    }


# -- k-anonymity -----------------------------------------------------------------------------------

def _year_band(year: str) -> str:
    if re.fullmatch(r"\d{4}", year):
        low = int(year) - int(year) % 5
        return f"{low}-{low + 4}"
    return year  # unknown ("") or already generalised


def _district_area(district: str) -> str:
    m = re.match(r"[A-Z]+", district.upper())
    return m.group(0) if m and district != SUPPRESSED else district


def _suppress(_value: str) -> str:
    return SUPPRESSED


# The ladder every record climbs while its combination is rarer than k: generalise first (the two
# recodings the contract names), then suppress, cheapest loss first: the area (one LA spans one or two
# postcode areas, so it says little), then sex, then the year band (age matters most to the evaluation).
_LADDER = (
    ("year_of_birth", _year_band),
    ("postcode_district", _district_area),
    ("postcode_district", _suppress),
    ("sex", _suppress),
    ("year_of_birth", _suppress),
)


# Generalisation levels per quasi-identifier, finest first: 0 is the value as computed, the last is "*".
# A person's level on a night is what the recipient saw; later nights never go below it (contract section 10).
LEVELS: dict[str, tuple] = {
    "year_of_birth": (None, _year_band, _suppress),
    "postcode_district": (None, _district_area, _suppress),
    "sex": (None, _suppress),
}


def generalise(raw: str, column: str, level: int) -> str:
    """``raw`` (a finest value) at ``level`` of its ladder."""
    recode = LEVELS[column][level]
    return raw if recode is None else recode(raw)


def level_of(raw: str, released: str, column: str) -> int:
    """The level at which ``raw`` was released as ``released``."""
    if released == SUPPRESSED:
        return len(LEVELS[column]) - 1
    return 0 if released == raw else 1


def _class_sizes(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby(list(QUASI_IDENTIFIERS), sort=False, dropna=False)["sex"].transform("size")


def k_anonymise(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Make every combination of (year_of_birth, postcode_district, sex) appear at least ``k`` times.

    Per-record (local) recoding, so that common combinations keep their full detail:

    1. Only rows whose combination occurs fewer than ``k`` times are touched. Such rows climb a ladder one
       rung at a time, recounting after every rung: year -> five-year band ("1980-1984"); district ->
       postcode area ("SW1A" -> "SW"); area -> "*"; sex -> "*"; band -> "*". A combination that reaches
       ``k`` stops climbing, and a combination of size >= k never loses rows, so it stays >= k.
    2. After the last rung only the all-suppressed combination ("*", "*", "*") can be rarer than ``k``;
       if it is, whole combinations, smallest first (ties by value), are suppressed into it until it
       reaches ``k``. A frame of fewer than ``k`` rows ends fully suppressed (it cannot do better).

    Unknown values ("") are a value of their own until suppressed. ``k <= 1`` returns the frame
    unchanged. The result depends only on the rows, not their order. Other columns are kept.
    """
    out = frame.copy()
    if k <= 1 or out.empty:
        return out
    for column in QUASI_IDENTIFIERS:
        out[column] = out[column].map(_text).astype(object)
    for column, recode in _LADDER:
        small = _class_sizes(out) < k
        if not small.any():
            return out
        out.loc[small, column] = out.loc[small, column].map(recode)

    everything = (SUPPRESSED,) * len(QUASI_IDENTIFIERS)
    combos = out.groupby(list(QUASI_IDENTIFIERS), sort=False, dropna=False).size()
    residual = int(combos.get(everything, 0))
    if 0 < residual < k:
        others = sorted(((int(n), key) for key, n in combos.items() if key != everything))
        for n, key in others:
            if residual >= k:
                break
            rows = (out[list(QUASI_IDENTIFIERS)] == pd.Series(key, index=list(QUASI_IDENTIFIERS))).all(axis=1)
            out.loc[rows, list(QUASI_IDENTIFIERS)] = SUPPRESSED
            residual += n
    return out


# -- small-cell disclosure control -----------------------------------------------------------------

def disclose(count: int, suppress_below: int, round_to: int) -> str:
    """A count as published: 0 stays "0", 1..suppress_below-1 is "[c]", else rounded to ``round_to`` (halves up)."""
    if count < 0:
        raise ValueError("a count cannot be negative")
    if count == 0:
        return "0"
    if count < suppress_below:
        return "[c]"
    return str((2 * count + round_to) // (2 * round_to) * round_to)


Cell = tuple[str, str]  # (measure, programme_status)


def published_range(mark: str, suppress_below: int, round_to: int) -> tuple[int, float]:
    """The counts a published cell can stand for, as the recipient sees it: "0" is 0 (or a count that
    rounds to 0 when suppress_below is below round_to/2); a rounded v is any count >= suppress_below that
    rounds to v; "[c]" is any count >= 1, since the format cannot say which [c] is a secondary suppression."""
    if mark == "[c]":
        return 1, float("inf")
    v, half = int(mark), (round_to - 1) // 2
    if v == 0:
        return 0, (half if suppress_below <= half else 0)
    return max(suppress_below, v - round_to // 2), v + half


def summary_relations(min_problems: int) -> list[tuple[dict[Cell, int], int]]:
    """What a recipient knows ties the summary's cells together, each as (coefficients, sense): the
    relation says sum(coefficient * cell) == 0 (sense 0) or >= 0 (sense 1).

    Per measure, intervention + comparison = all (the only two statuses). Per status: eligible families
    and families with a flag are among the families assessed; an eligible family has at least
    ``min_problems`` flags; every intervention family and every eligible comparison family is submitted
    with at least one person."""
    flags_and_eligible = ("families_eligible", *FLAGS)
    out: list[tuple[dict[Cell, int], int]] = []
    for m in SUMMARY_MEASURES:
        out.append(({(m, "intervention"): 1, (m, "comparison"): 1, (m, "all"): -1}, 0))
    for st in SUMMARY_STATUSES:
        for m in flags_and_eligible:
            out.append(({("families_assessed", st): 1, (m, st): -1}, 1))
        out.append(({**{(f, st): 1 for f in FLAGS}, ("families_eligible", st): -min_problems}, 1))
    out.append(({("persons_submitted", "intervention"): 1, ("families_assessed", "intervention"): -1}, 1))
    out.append(({("persons_submitted", "comparison"): 1, ("families_eligible", "comparison"): -1}, 1))
    out.append(({("persons_submitted", "all"): 1, ("families_assessed", "intervention"): -1,
                 ("families_eligible", "comparison"): -1}, 1))
    return out


def feasible_intervals(marks: dict[Cell, str], relations: list[tuple[dict[Cell, int], int]],
                       suppress_below: int, round_to: int) -> dict[Cell, tuple[float, float]]:
    """For each [c] cell, the least and greatest count it can have in any table of non-negative
    integers that agrees with every published cell and every relation (integer programs, HiGHS)."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    cells = list(marks)
    index = {c: i for i, c in enumerate(cells)}
    ranges = [published_range(marks[c], suppress_below, round_to) for c in cells]
    # a [c] has no upper bound; a cap far above any count keeps the programs bounded (HiGHS cannot
    # always tell unbounded from infeasible), and a maximum at the cap reads as unbounded
    cap = 1e9
    bounds = Bounds([lo for lo, _ in ranges], [min(hi, cap) for _, hi in ranges])
    constraints = []
    if relations:
        a = np.zeros((len(relations), len(cells)))
        for row, (coefficients, _) in enumerate(relations):
            for cell, coefficient in coefficients.items():
                a[row, index[cell]] = coefficient
        upper = np.array([0.0 if sense == 0 else np.inf for _, sense in relations])
        constraints.append(LinearConstraint(a, np.zeros(len(relations)), upper))
    integral = np.ones(len(cells))
    out: dict[Cell, tuple[float, float]] = {}
    for cell in cells:
        if marks[cell] != "[c]":
            continue
        ends = []
        for sign in (1.0, -1.0):
            c = np.zeros(len(cells))
            c[index[cell]] = sign
            result = milp(c, constraints=constraints, integrality=integral, bounds=bounds)
            if result.status != 0:  # the true counts are a solution, so this is a fault in tfp
                raise RuntimeError(f"disclosure check failed for {cell[0]}/{cell[1]}: {result.message}")
            end = round(sign * result.fun)
            ends.append(float("inf") if end >= cap / 2 else end)
        out[cell] = (ends[0], ends[1])
    return out


def protect_summary(counts: dict[Cell, int], suppress_below: int, round_to: int,
                    relations: list[tuple[dict[Cell, int], int]]) -> dict[Cell, str]:
    """The summary's cells as published: primary suppression and rounding (``disclose``), then secondary
    suppression until every [c] cell's feasible interval is at least ``suppress_below`` wide.

    A cell too narrow gets a partner: the non-zero published cell with the smallest count in its row
    (measure), else in its column (status), else anywhere; ties by the summary's order. Relations the
    true counts do not satisfy are not used (a recipient relying on them would be misled). The result
    depends only on the counts, so re-runs are byte-identical.
    """
    marks = {cell: disclose(n, suppress_below, round_to) for cell, n in counts.items()}
    if "[c]" not in marks.values():
        return marks
    relations = [(coefficients, sense) for coefficients, sense in relations
                 if (value := sum(k * counts[c] for c, k in coefficients.items())) == 0
                 or (sense == 1 and value > 0)]
    order = {cell: i for i, cell in enumerate(counts)}
    while True:
        intervals = feasible_intervals(marks, relations, suppress_below, round_to)
        narrow = [cell for cell in counts if cell in intervals
                  and intervals[cell][1] - intervals[cell][0] < suppress_below]
        if not narrow:
            return marks
        target = narrow[0]
        candidates = [c for c in counts if marks[c] != "[c]" and counts[c] > 0]
        pools = ([c for c in candidates if c[0] == target[0]], [c for c in candidates if c[1] == target[1]],
                 candidates)
        pool = next((p for p in pools if p), None)
        if pool is None:
            raise RuntimeError(f"secondary suppression cannot protect {target[0]}/{target[1]}")
        marks[min(pool, key=lambda c: (counts[c], order[c]))] = "[c]"


# -- the three outputs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outputs:
    """The three CSV texts of a submission and their data rows (header excluded); ``counts`` are the
    unrounded totals (counts only, nothing personal); ``published`` is the summary as delivered,
    measure -> programme_status -> count after the disclosure rules, for the run report."""

    submission: str
    summary: str
    withdrawals: str
    submission_rows: int
    summary_rows: int
    withdrawal_rows: int
    counts: dict[str, int] = field(default_factory=dict)
    published: dict[str, dict[str, str]] = field(default_factory=dict)
    # person_ref -> level per quasi-identifier as released: for record_release, never for a log or XCom
    released: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    # the progress file (contract section 10, tfp.progress): its CSV text and data rows
    progress: str = PROGRESS_HEADER
    progress_rows: int = 0


def _csv(header: tuple[str, ...], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


Levels = dict[str, tuple[int, ...]]


def _release_floor(conn, reference_date: date) -> Levels:
    """Per person, the coarsest level per quasi-identifier released by the nights packaged before R was
    first packaged, and by R itself: a re-run of R is never finer than R was, and never coarser than R
    was for the same inputs (the floor is then R's own output, which k-anonymity leaves as it is)."""
    t = released_generalisation
    own = conn.execute(select(func.max(t.c.release_order)).where(t.c.reference_date == reference_date)).scalar()
    query = select(t.c.person_ref, *(func.max(t.c[q]) for q in QUASI_IDENTIFIERS)).group_by(t.c.person_ref)
    if own is not None:
        query = query.where(t.c.release_order <= own)
    return {str(ref): tuple(int(v) for v in levels) for ref, *levels in conn.execute(query)}


def record_release(engine: Engine, reference_date: date, released: Levels) -> int:
    """Remember the levels R released, once R's package is written: R keeps the place in the release
    order of its first packaging. Returns the number of people recorded."""
    t = released_generalisation
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7423002)"))
        order = conn.execute(select(func.max(t.c.release_order)).where(t.c.reference_date == reference_date)).scalar()
        if order is None:
            order = (conn.execute(select(func.max(t.c.release_order))).scalar() or 0) + 1
        conn.execute(delete(t).where(t.c.reference_date == reference_date))
        refs = sorted(released)
        return insert_rows(conn, t, {
            "person_ref": refs, "reference_date": [reference_date] * len(refs), "release_order": [order] * len(refs),
            **{q: [released[ref][i] for ref in refs] for i, q in enumerate(QUASI_IDENTIFIERS)},
        })


def _k_anonymise_over_nights(submission: pd.DataFrame, refs: pd.Series, k: int,
                             floor: Levels) -> tuple[pd.DataFrame, Levels]:
    """k-anonymity for tonight, starting each person at the coarsest level released for them before, so
    nobody's quasi-identifiers become finer than a recipient already saw; returns the levels released."""
    start = submission.copy()
    ref_list = refs.tolist()
    for i, column in enumerate(QUASI_IDENTIFIERS):
        levels = [floor[ref][i] if ref in floor else 0 for ref in ref_list]
        start[column] = [generalise(v, column, lvl) for v, lvl in zip(submission[column], levels, strict=True)]
    out = k_anonymise(start, k)
    per_column = [[level_of(raw, shown, q) for raw, shown in zip(submission[q], out.loc[submission.index, q],
                                                                  strict=True)]
                  for q in QUASI_IDENTIFIERS]
    return out, dict(zip(ref_list, zip(*per_column, strict=True), strict=True))


def _read(engine: Engine, reference_date: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Levels]:
    with engine.connect() as conn:
        roster = current_rows(conn, "families", reference_date)
        consent = conn.execute(
            select(person_consent.c.person_ref, person_consent.c.state, person_consent.c.state_on,
                   person_consent.c.kept)
            .where(person_consent.c.reference_date == reference_date)
        )
        consent = pd.DataFrame([tuple(r) for r in consent], columns=["person_ref", "state", "state_on", "kept"])
        flags = conn.execute(
            select(family_flags).where(family_flags.c.reference_date == reference_date,
                                       family_flags.c.scope == FlagScope.KEPT)
        )
        flags = pd.DataFrame([tuple(r) for r in flags], columns=list(flags.keys()))
        floor = _release_floor(conn, reference_date)
    return roster, consent, flags, floor


def _year(value: object) -> str:
    d = _date_or_none(value)
    return str(d.year) if d else ""


def _district(value: object) -> str:
    postcode = _text(value)
    return postcode_district(postcode) if is_valid_postcode(postcode) else ""


def _month(value: object) -> str:
    d = _date_or_none(value)
    return d.strftime("%Y-%m") if d else ""


def build_outputs(engine: Engine, reference_date: date, config: Config, keys: SecretKeys) -> Outputs:
    """The submission, summary and withdrawals for R, from the roster, person_consent and family_flags
    (scope ``kept``) of R, and the progress file (:mod:`tfp.progress`). Raises when the consent or criteria stage has not run for R: an empty
    submission must never be delivered by mistake."""
    roster, consent, flags, floor = _read(engine, reference_date)
    if not roster.empty and consent.empty:
        raise RuntimeError(f"no consent decisions for {reference_date}: run the consent stage first")
    if consent["kept"].astype(bool).any() and flags.empty:
        raise RuntimeError(f"no family flags for {reference_date}: run the criteria stage first")
    la_code = config.local_authority.code
    if not roster.empty:
        roster = roster.assign(person_ref=roster["person_ref"].astype(str), family_ref=roster["family_ref"].astype(str))
        roster = roster.sort_values(["person_ref", "record_id"], kind="mergesort").drop_duplicates("person_ref")
    consent = consent.assign(person_ref=consent["person_ref"].astype(str)).set_index("person_ref")
    kept_refs = set(consent.index[consent["kept"].astype(bool)])

    flags = flags.assign(family_ref=flags["family_ref"].astype(str)).set_index("family_ref")
    submitted_families = flags.index[(flags["eligible"] == 1) | (flags["programme_status"] == "intervention")]

    rows: list[dict[str, str]] = []
    refs: list[str] = []
    members = roster[roster["person_ref"].isin(kept_refs) & roster["family_ref"].isin(set(submitted_families))] \
        if not roster.empty else roster
    family_of = flags.to_dict("index")
    for person in members.itertuples(index=False):
        family = family_of[person.family_ref]
        row = {
            "reference_date": reference_date.isoformat(),
            "la_code": la_code,
            "family_token": family_token(keys.pseudonym, person.family_ref),
            "person_token": person_token(keys.pseudonym, person.person_ref),
            **match_keys(keys.linkage, person.forename, person.surname, person.date_of_birth, person.postcode,
                         person.sex, person.nino, person.upn, getattr(person, "nhs_number", None)),
            "role": _text(person.role),
            "sex": _sex(person.sex),
            "year_of_birth": _year(person.date_of_birth),
            "postcode_district": _district(person.postcode),
            "programme_status": _text(person.programme_status),
            "attached_month": _month(person.attached_date),
            **{flag: str(int(family[flag])) for flag in FLAGS},
            "problem_count": str(int(family["problem_count"])),
            "eligible": str(int(family["eligible"])),
        }
        rows.append(row)
        refs.append(person.person_ref)
    submission = pd.DataFrame(rows, columns=list(SUBMISSION_COLUMNS))
    refs_of = pd.Series(refs, index=submission.index, dtype=object)
    submission = submission.sort_values(["family_token", "person_token"], kind="mergesort")
    submission, released = _k_anonymise_over_nights(submission, refs_of.loc[submission.index],
                                                    config.anonymisation.k, floor)

    d = config.disclosure
    cell_counts: dict[Cell, int] = {}
    family_counts: dict[str, pd.DataFrame] = {
        "intervention": flags[flags["programme_status"] == "intervention"],
        "comparison": flags[flags["programme_status"] == "comparison"],
        "all": flags,
    }
    for measure in SUMMARY_MEASURES:
        for status in SUMMARY_STATUSES:
            families = family_counts[status]
            if measure == "families_assessed":
                n = len(families)
            elif measure == "families_eligible":
                n = int((families["eligible"] == 1).sum())
            elif measure == "persons_submitted":
                n = len(submission) if status == "all" else int((submission["programme_status"] == status).sum())
            else:
                n = int((families[measure] == 1).sum())
            cell_counts[measure, status] = n
    marks = protect_summary(cell_counts, d.suppress_below, d.round_to, summary_relations(config.criteria.min_problems))
    summary_rows = [[measure, status, mark] for (measure, status), mark in marks.items()]

    withdrawn = consent[consent["state"] == ConsentState.WITHDRAWN]
    roster_refs = set(roster["person_ref"]) if not roster.empty else set()
    withdrawal_rows = sorted(
        [person_token(keys.pseudonym, ref), as_date(on).isoformat()]
        for ref, on in zip(withdrawn.index, withdrawn["state_on"], strict=True) if ref in roster_refs
    )

    counts = {"families_assessed": len(flags), "families_eligible": int((flags["eligible"] == 1).sum()),
              "persons_submitted": len(submission), "withdrawals": len(withdrawal_rows)}
    log.info("outputs for %s: %s", reference_date, counts)
    from tfp.progress import compute_progress, progress_csv

    progress, progress_rows = progress_csv(compute_progress(engine, reference_date, config.criteria), keys.pseudonym)
    return Outputs(
        submission=_csv(SUBMISSION_COLUMNS, submission[list(SUBMISSION_COLUMNS)].values.tolist()),
        summary=_csv(SUMMARY_COLUMNS, summary_rows),
        withdrawals=_csv(WITHDRAWAL_COLUMNS, withdrawal_rows),
        submission_rows=len(submission),
        summary_rows=len(summary_rows),
        withdrawal_rows=len(withdrawal_rows),
        counts=counts,
        published={m: {status: c for measure, status, c in summary_rows if measure == m} for m in SUMMARY_MEASURES},
        released=released,
        progress=progress,
        progress_rows=progress_rows,
    )
