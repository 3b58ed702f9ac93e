"""Stage 7: what leaves the building, de-identified (contract section 7).

Tokens and match keys are keyed hashes: without the keys nobody can reverse them or test a
guess, and the recipient can still link the same person across submissions and to other
sources that hold the linkage key. Quasi-identifiers are generalised to k-anonymity and the
aggregate counts go through small-cell suppression and rounding. Only people kept by the
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
from sqlalchemy import Engine, select

from tfp.config import Config, SecretKeys
from tfp.consent import as_date
from tfp.current import current_rows
from tfp.identifiers import is_valid_postcode, normalise_name, normalise_nino, postcode_district
from tfp.warehouse import FLAGS, family_flags, person_consent

log = logging.getLogger(__name__)

SUBMISSION_COLUMNS: tuple[str, ...] = (
    "reference_date", "la_code", "family_token", "person_token", "mk1", "mk2", "mk3", "mk4", "mk5", "mk_nino",
    "mk_upn", "role", "sex", "year_of_birth", "postcode_district", "programme_status", "attached_month", *FLAGS,
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
               sex: object, nino: object, upn: object) -> dict[str, str]:
    """The seven match keys of contract section 7; a key with any input missing is "".

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


def _csv(header: tuple[str, ...], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _read(engine: Engine, reference_date: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
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
                                       family_flags.c.scope == "kept")
        )
        flags = pd.DataFrame([tuple(r) for r in flags], columns=list(flags.keys()))
    return roster, consent, flags


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
    (scope ``kept``) of R. Raises when the consent or criteria stage has not run for R: an empty
    submission must never be delivered by mistake."""
    roster, consent, flags = _read(engine, reference_date)
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
                         person.sex, person.nino, person.upn),
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
    submission = pd.DataFrame(rows, columns=list(SUBMISSION_COLUMNS))
    submission = submission.sort_values(["family_token", "person_token"], kind="mergesort")
    submission = k_anonymise(submission, config.anonymisation.k)

    d = config.disclosure
    summary_rows: list[list[str]] = []
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
            summary_rows.append([measure, status, disclose(n, d.suppress_below, d.round_to)])

    withdrawn = consent[consent["state"] == "withdrawn"]
    roster_refs = set(roster["person_ref"]) if not roster.empty else set()
    withdrawal_rows = sorted(
        [person_token(keys.pseudonym, ref), as_date(on).isoformat()]
        for ref, on in zip(withdrawn.index, withdrawn["state_on"], strict=True) if ref in roster_refs
    )

    counts = {"families_assessed": len(flags), "families_eligible": int((flags["eligible"] == 1).sum()),
              "persons_submitted": len(submission), "withdrawals": len(withdrawal_rows)}
    log.info("outputs for %s: %s", reference_date, counts)
    return Outputs(
        submission=_csv(SUBMISSION_COLUMNS, submission[list(SUBMISSION_COLUMNS)].values.tolist()),
        summary=_csv(SUMMARY_COLUMNS, summary_rows),
        withdrawals=_csv(WITHDRAWAL_COLUMNS, withdrawal_rows),
        submission_rows=len(submission),
        summary_rows=len(summary_rows),
        withdrawal_rows=len(withdrawal_rows),
        counts=counts,
        published={m: {status: c for measure, status, c in summary_rows if measure == m} for m in SUMMARY_MEASURES},
    )
