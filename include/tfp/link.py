"""Stage 4: link partner records to roster persons (contract section 4).

A record is linked to at most one roster person: first by an exact NINO, UPN or NHS number, otherwise by
Splink (DuckDB, in memory) on forename, surname, date of birth, postcode and sex, with the model
versioned in ``models/linkage_model.json`` and never re-estimated from a night's data.

Calibration. The model's m and u values come from labelled synthetic data (``tfp_dev.link_training``).
Its prior is replaced at inference by the roster size: the prior odds that a record belongs to a
given one of the N roster persons are 1/N (a record has at most one true person among N, and we are
agnostic about whether it has one at all). Because a record has at most one true person, the
probability reported for a candidate is its posterior odds against every competing candidate and
against "nobody": p_i = odds_i / (1 + sum_j odds_j). Two near-identical candidates (twins) therefore
share the probability instead of both looking certain.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Collection, Mapping
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tfp.errors import TfpError
from tfp.identifiers import is_valid_postcode, normalise_name, normalise_nino, normalise_postcode
from tfp.statuses import LinkMethod, ReviewReason

if TYPE_CHECKING:
    from tfp.config import Config
    from tfp.context import LinkResult, RunContext

MODEL_PATH = Path(__file__).resolve().parent / "models" / "linkage_model.json"
PROBABILITY_DECIMALS = 6
RESULT_COLUMNS = ["record_id", "person_ref", "match_probability", "method"]
# What a review queue needs (issue 15): the runner-up and its probability, and ``doubtful`` for a
# record left unlinked although its best two candidates together reached DOUBTFUL_FROM: it is
# probably one of them, but nothing in it decides which (twins), or the best alone falls short.
REVIEW_COLUMNS = ["best_ref", "runner_up_ref", "runner_up_probability", "doubtful", "review_reason"]
DOUBTFUL_FROM = 0.5
# The review queue (issue 15 item 3, contract section 10's linkage.review_band). With a band [low, high),
# a record whose best candidate's probability p1 is in it goes to review instead of being linked. A
# near-tie goes too: the runner-up's probability p2 is at least TIE_RATIO (linkage.review_tie_ratio,
# default 0.5) times p1, i.e. the two match weights are within log2(1/ratio) = 1 bit, and p1 + p2 reaches
# the band's low end (the record is probably one of the two, and nothing in it says which). A near-tie
# sends both candidates; a band record its best only. A reviewer's decision, once made, overrides both.
# Candidate pairs whose match weight is below this cannot matter to any decision; dropping them in
# DuckDB keeps the frame handed to pandas small.
MIN_MATCH_WEIGHT = -40.0
# DuckDB's working memory for Splink's pairs. Beyond it DuckDB spills to a private folder under the work
# directory (removed when linking ends): a 50,000-family night's link peaks at 1.2 GB instead of 2.6 GB,
# for about a fifth more time. The spilled rows hold what the warehouse beside them already holds.
DUCKDB_MEMORY_LIMIT = "512MB"
SPILL_PREFIX = "link-spill-"

# Which full names a forename may stand for comes from the ``nicknames`` package (a curated English
# name-nickname dataset), plus a short project supplement (``models/nicknames_supplement.csv``, each
# entry with its reason) for British short forms it lacks. A name's variants are itself and every full
# name it may stand for; overlapping variants are a comparison level of their own, so that "Bob" and
# "Robert" agree without being treated as identical.
NICKNAME_SUPPLEMENT = Path(__file__).resolve().parent / "models" / "nicknames_supplement.csv"


@cache
def _supplement() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    with NICKNAME_SUPPLEMENT.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            table.setdefault(row["name"].strip().upper(), set()).add(row["stands_for"].strip().upper())
    return {k: frozenset(v) for k, v in table.items()}


@cache
def _nicknamer():
    from nicknames import NickNamer

    return NickNamer()


@cache
def forename_variants(name: str) -> tuple[str, ...]:
    """A normalised forename, itself and every full name it may stand for (CHRIS -> CHRIS, CHRISTINE, ...)."""
    full = {normalise_name(c) for c in _nicknamer().canonicals_of(name.lower())}
    return tuple(sorted({name} | full | _supplement().get(name, frozenset())))


_TOKEN_SPLIT = re.compile(r"[\s\-]+")


def quiet_splink() -> None:
    """Splink logs SQL and, at INFO, can echo values: keep it at WARNING so no record reaches a log."""
    for name in ("splink", "duckdb"):
        logging.getLogger(name).setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------------------
# Normalisation: what both sides look like before Splink compares them


def _missing(value: Any) -> bool:
    """None, NaN, NaT or pd.NA."""
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str | None:
    if _missing(value):
        return None
    text = str(value).strip()
    return text or None


def name_tokens(value: Any) -> list[str]:
    """The normalised parts of a name split at spaces and hyphens: "Smith-Jones" -> [SMITH, JONES]."""
    text = _text(value)
    if not text:
        return []
    return [t for t in (normalise_name(part) for part in _TOKEN_SPLIT.split(text)) if t]


def parse_dob(value: Any) -> date | None:
    """A date from a date, datetime or ISO string; None for anything unreadable or impossible."""
    if _missing(value):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _text(value)
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _dob_swapped(d: date | None) -> str | None:
    """The same date with day and month exchanged, when that is a different, real date."""
    if d is None or d.day > 12 or d.day == d.month:
        return None
    return date(d.year, d.day, d.month).isoformat()


_OUTWARD = re.compile(r"^([A-Z]{1,2})[0-9][A-Z0-9]?$")


def postcode_parts(value: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(postcode, sector, district, area): each level the text supports, None where it does not.

    A valid UK postcode gives all four (``E17 4AB``, ``E17 4``, ``E17``, ``E``). A partial or
    malformed one still counts at the level it supports: ``E17`` gives district and area, ``E17 4A``
    sector too. Text that is no UK postcode at all (a foreign code) is kept whole, upper case without
    spaces, in ``postcode`` only, so that two copies of it agree and nothing else is claimed.
    """
    text = _text(value)
    if not text:
        return None, None, None, None
    if is_valid_postcode(text):
        full = normalise_postcode(text)
        outward, inward = full.split(" ")
        return full, f"{outward} {inward[0]}", outward, _OUTWARD.match(outward).group(1)
    spaced = re.sub(r"\s+", " ", text.upper()).strip()
    outward, _, inward = spaced.partition(" ")
    found = _OUTWARD.match(outward)
    if found:
        sector = f"{outward} {inward[0]}" if inward[:1].isdigit() else None
        return None, sector, outward, found.group(1)
    compact = re.sub(r"[^A-Z0-9]", "", spaced)
    return (compact or None), None, None, None


def _sex(value: Any) -> str | None:
    text = (_text(value) or "").upper()
    return text if text in ("M", "F") else None


def _identifier(value: Any) -> str | None:
    return normalise_nino(_text(value)) or None


def _distinct(series: pd.Series | None, n: int) -> tuple[Any, list[Any]]:
    """(codes, values): each row's index into its column's distinct values, missing values last.

    Names, dates and postcodes repeat a lot (a child has a row per term), so everything derived from
    them is computed once per distinct value. Factorising is exact only when all values share a kind
    (1 == 1.0 would merge otherwise); other columns fall back to a per-row cache keyed by type.
    """
    import numpy as np

    if series is None:
        return np.zeros(n, dtype=np.intp), [None]
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty", "date"):
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        values = list(uniques) + [None]
        codes = np.where(codes < 0, len(values) - 1, codes)
        return codes, values
    index: dict[Any, int] = {}
    values = []
    codes = np.empty(n, dtype=np.intp)
    for i, v in enumerate(series.tolist()):
        key = None if _missing(v) else (type(v), v)
        if key not in index:
            index[key] = len(values)
            values.append(v)
        codes[i] = index[key]
    return codes, values


def comparison_frame(frame: pd.DataFrame, id_column: str):
    """The columns the model compares, as an Arrow table with fixed types (all-empty columns too).

    Normalisation: names NFKD, no accents, upper case A-Z, split into tokens at spaces and hyphens;
    the forename's first token and the full names it may be short for; dates as ISO strings plus the
    day/month-swapped date; postcodes split into full code, sector, district and area as far as the
    text supports them (``postcode_parts``); sex M/F only.
    """
    import pyarrow as pa

    n = len(frame)

    def derived(name: str, fn, fields: dict[str, Any]) -> dict[str, Any]:
        # fn gives a distinct value's fields as a tuple; Arrow's take spreads them to the rows.
        codes, values = _distinct(frame[name] if name in frame else None, n)
        indices = pa.array(codes, type=pa.int64())
        per_value = list(zip(*(fn(v) for v in values), strict=True))
        return {field: pa.array(list(per_value[i]), type=kind).take(indices)
                for i, (field, kind) in enumerate(fields.items())}

    def forename_fields(v: Any) -> tuple[str | None, str | None, list[str] | None]:
        tokens = name_tokens(v)
        first = tokens[0] if tokens else None
        return "".join(tokens) or None, first, list(forename_variants(first)) if first else None

    def surname_fields(v: Any) -> tuple[str | None, list[str] | None]:
        tokens = name_tokens(v)
        return "".join(tokens) or None, tokens or None

    def dob_fields(v: Any) -> tuple[str | None, str | None, int | None]:
        d = parse_dob(v)
        return (d.isoformat() if d else None), _dob_swapped(d), (d.year if d else None)

    text, names = pa.string(), pa.list_(pa.string())
    forename = derived("forename", forename_fields,
                       {"forename": text, "forename_first": text, "forename_names": names})
    surname = derived("surname", surname_fields, {"surname": text, "surname_tokens": names})
    dob = derived("date_of_birth", dob_fields, {"dob": text, "dob_swap": text, "yob": pa.int32()})
    columns = {
        "unique_id": pa.array([str(v) for v in frame[id_column].tolist()], type=text),
        **forename, **surname, **dob,
        **derived("postcode", postcode_parts, {"postcode": text, "postcode_sector": text,
                                                "postcode_district": text, "postcode_area": text}),
        **derived("sex", lambda v: (_sex(v),), {"sex": text}),
    }
    schema = pa.schema([
        ("unique_id", pa.string()), ("forename", pa.string()), ("forename_first", pa.string()),
        ("forename_names", pa.list_(pa.string())), ("surname", pa.string()), ("surname_tokens", pa.list_(pa.string())),
        ("dob", pa.string()), ("dob_swap", pa.string()), ("yob", pa.int32()), ("postcode", pa.string()),
        ("postcode_sector", pa.string()), ("postcode_district", pa.string()), ("postcode_area", pa.string()),
        ("sex", pa.string()),
    ])
    return pa.table([columns[f.name] for f in schema], schema=schema)


# ---------------------------------------------------------------------------------------------
# The model


def load_model(path: Path = MODEL_PATH) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def settings_for_roster(model: dict[str, Any], roster_size: int) -> dict[str, Any]:
    """The versioned model with its prior set from the roster size: prior odds 1/N per person."""
    settings = json.loads(json.dumps(model))
    settings["probability_two_random_records_match"] = 1.0 / (max(roster_size, 1) + 1.0)
    settings["linker_uid"] = None
    return {k: v for k, v in settings.items() if v is not None}


BEST_COLUMNS = ["record_key", "person_ref", "match_probability", "runner_up_ref", "runner_up_probability"]


def best_candidates(roster_table, records_table, settings: dict[str, Any],
                    rejected: Collection[tuple[str, str]] = (), spill_dir: Path | None = None) -> pd.DataFrame:
    """One row per record that has a candidate: its best person and that person's probability against all
    the others, and the runner-up on the same scale.

    Splink scores every blocked (record, person) pair; the pairs stay in DuckDB, which reduces them to
    one row per record, so their number (which grows with the square of the borough) never reaches
    pandas; DuckDB works within DUCKDB_MEMORY_LIMIT and spills beyond it into a private (0700) folder made
    in ``spill_dir`` (the system's temporary folder when None) and removed on the way out. A reviewer's
    rejected pair is never a candidate. p_i = odds_i / (1 + sum_j odds_j), in log
    space: with w the match weights (clipped to +-1000) and top the best, p_best = 1 / (sum_j 2^(w_j - top)
    + 2^-top). Ties go to the smallest person_ref.
    """
    import shutil
    import tempfile

    import numpy as np
    import pyarrow as pa
    from splink import DuckDBAPI, Linker

    quiet_splink()
    if spill_dir is not None:
        for folder in (spill_dir.parent, spill_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
    spill = Path(tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=spill_dir))
    db_api = DuckDBAPI(":memory:")
    con = db_api.duckdb_con
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute("SET preserve_insertion_order = false")  # the pairs are ranked, never read in order
        roster_sdf = db_api.register(roster_table, table_name="roster")
        records_sdf = db_api.register(records_table, table_name="records")
        linker = Linker([roster_sdf, records_sdf], settings, validate_settings=False, log_level=None)
        predictions = linker.inference.predict(threshold_match_weight=MIN_MATCH_WEIGHT, warning_mode="never")
        con.register("tfp_rejected", pa.table({"record_key": pa.array([k for k, _ in rejected], pa.string()),
                                               "person_ref": pa.array([p for _, p in rejected], pa.string())}))
        best = con.execute(
            f"""
            WITH pairs AS (
                SELECT CASE WHEN source_dataset_l = 'records' THEN unique_id_l ELSE unique_id_r END AS record_key,
                       CASE WHEN source_dataset_l = 'records' THEN unique_id_r ELSE unique_id_l END AS person_ref,
                       greatest(least(CAST(match_weight AS DOUBLE), 1000.0), -1000.0) AS w
                FROM {predictions.physical_name}
            ), candidates AS (
                SELECT * FROM pairs ANTI JOIN tfp_rejected USING (record_key, person_ref)
            ), ranked AS (
                SELECT record_key, person_ref, w,
                       row_number() OVER (PARTITION BY record_key ORDER BY w DESC, person_ref) AS rank,
                       max(w) OVER (PARTITION BY record_key) AS top
                FROM candidates
            ), odds AS (
                SELECT record_key, fsum(pow(2.0, w - top)) AS others FROM ranked GROUP BY record_key
            )
            SELECT b.record_key, b.person_ref, b.w AS top, o.others, r.person_ref AS runner_up_ref, r.w AS runner_up_w
            FROM ranked b JOIN odds o USING (record_key)
            LEFT JOIN ranked r ON r.record_key = b.record_key AND r.rank = 2
            WHERE b.rank = 1
            ORDER BY b.record_key
            """
        ).df()
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    if best.empty:
        return pd.DataFrame({c: [] for c in BEST_COLUMNS})
    top = best["top"].to_numpy(dtype=float)
    probability = 1.0 / (best["others"].to_numpy(dtype=float) + 2.0 ** (-top))
    second = best["runner_up_w"].to_numpy(dtype=float)  # NaN where there is no runner-up
    has_second = ~np.isnan(second)
    return pd.DataFrame({  # object columns: a missing runner-up is None, not NaN
        "record_key": best["record_key"].tolist(),
        "person_ref": best["person_ref"].tolist(),
        "match_probability": probability,
        "runner_up_ref": [r if h else None for r, h in zip(best["runner_up_ref"].tolist(), has_second, strict=True)],
        "runner_up_probability": [p if h else None for p, h in
                                  zip((probability * 2.0 ** (second - top)).tolist(), has_second.tolist(), strict=True)],
    }, columns=BEST_COLUMNS, dtype=object)


# ---------------------------------------------------------------------------------------------
# Public interface


def _identifier_keys(frame: pd.DataFrame, column: str) -> Any:
    """Each row's normalised identifier (None when missing), normalised once per distinct value."""
    import numpy as np

    codes, values = _distinct(frame[column], len(frame))
    return np.array([_identifier(v) for v in values] + [None], dtype=object)[:-1][codes]


def _exact_links(roster: pd.DataFrame, records: pd.DataFrame, column: str) -> Any:
    """Each record's person_ref where the normalised identifier agrees (smallest person_ref on a tie),
    None elsewhere, as an object array in the records' order."""
    import numpy as np

    if column not in roster or column not in records:
        return np.full(len(records), None, dtype=object)
    owners: dict[str, str] = {}
    for ref, key in zip(roster["person_ref"].tolist(), _identifier_keys(roster, column).tolist(), strict=True):
        if key and (key not in owners or ref < owners[key]):
            owners[key] = ref
    codes, values = _distinct(records[column], len(records))
    owner_of_value = [owners.get(k) if k else None for k in (_identifier(v) for v in values)]
    return np.array(owner_of_value + [None], dtype=object)[:-1][codes]


def review_reason(p1: float | None, p2: float | None, review_band: tuple[float, float] | None,
                  tie_ratio: float) -> ReviewReason | None:
    """Why a record with best probability ``p1`` and runner-up ``p2`` goes to review, or None.

    ``near_tie`` when p2 >= tie_ratio * p1 and p1 + p2 >= the band's low end; else ``band`` when
    low <= p1 < high. No band (None, or low == high): nothing goes to review.
    """
    if p1 is None or review_band is None:
        return None
    low, high = review_band
    if low >= high:
        return None
    q = p2 or 0.0
    if q > 0 and q >= tie_ratio * p1 and p1 + q >= low:
        return ReviewReason.NEAR_TIE
    if low <= p1 < high:
        return ReviewReason.BAND
    return None


def link_records(roster: pd.DataFrame, records: pd.DataFrame, threshold: float = 0.95,
                 model: dict[str, Any] | None = None, review_band: tuple[float, float] | None = None,
                 tie_ratio: float = 0.5, rejected: Collection[tuple[str, str]] = (),
                 decided: Mapping[str, str] | None = None, spill_dir: Path | None = None) -> pd.DataFrame:
    """Link each record to at most one roster person; see the module docstring for the method. DuckDB
    spills into ``spill_dir`` (see :func:`best_candidates`).

    Returns one row per record: record_id, person_ref (None when unlinked), match_probability (1.0
    for an identifier link; otherwise the best candidate's probability even below the threshold, or
    None when nobody was a candidate) and method (nino, upn, nhs_number, probabilistic, unlinked), then the
    REVIEW_COLUMNS: the best Splink candidate (``best_ref``, whether linked or not), the runner-up candidate
    and its probability (None when there was none) and
    ``doubtful``, and ``review_reason`` (ReviewReason, or None). The probabilities of all candidates and of
    "nobody" add up to one, so twins or a parent and child of the same name share it and neither reaches
    the threshold unless the record's other fields decide between them.

    The review queue: with ``review_band``, a record that :func:`review_reason` sends to review is left
    unlinked with method ``queued``. Reviewers' decisions: a (record_id, person_ref) pair in ``rejected``
    (not a link) is never a candidate, so the record's probability is shared among its other candidates
    only; a record in ``decided`` (record_id -> person_ref, a link decision) is linked to that person
    (method ``reviewed``) when the person is on the roster. Identifier links win over both.
    """
    import numpy as np

    roster = roster[roster["person_ref"].map(_text).notna()].copy()
    roster["person_ref"] = roster["person_ref"].map(str)
    roster = roster.drop_duplicates("person_ref")
    records = records.copy()
    records["record_id"] = records["record_id"].map(str)
    if records["record_id"].duplicated().any():
        raise ValueError("record_id must be unique within the records to link")

    by_nino = _exact_links(roster, records, "nino")
    by_upn = _exact_links(roster, records, "upn")
    by_nhs = _exact_links(roster, records, "nhs_number")
    has_nino = np.array([p is not None for p in by_nino.tolist()], dtype=bool)
    has_upn = np.array([p is not None for p in by_upn.tolist()], dtype=bool) & ~has_nino
    has_nhs = np.array([p is not None for p in by_nhs.tolist()], dtype=bool) & ~has_nino & ~has_upn
    by_identifier = has_nino | has_upn | has_nhs
    rest = records[~by_identifier]

    best = pd.DataFrame({c: [] for c in BEST_COLUMNS})
    if len(rest) and len(roster):
        settings = settings_for_roster(model or load_model(), len(roster))
        best = best_candidates(comparison_frame(roster, "person_ref"), comparison_frame(rest, "record_id"),
                               settings, rejected, spill_dir)

    record_ids = records["record_id"].tolist()
    n = len(record_ids)
    # Each record's row in ``best`` (-1: no candidate); identifier links never reach Splink.
    position = pd.Index(best["record_key"].tolist(), dtype=object).get_indexer(pd.Index(record_ids, dtype=object))
    candidate = position >= 0
    best_person = np.array(best["person_ref"].tolist() + [None], dtype=object)[position]
    best_probability = np.array([float(p) for p in best["match_probability"].tolist()] + [None], dtype=object)
    best_probability = best_probability[position]
    above = np.zeros(n, dtype=bool)
    above[candidate] = np.array([p >= threshold for p in best_probability[candidate].tolist()], dtype=bool)
    runner_up = np.array(best["runner_up_ref"].tolist() + [None], dtype=object)[position]
    runner_up_p = np.array(best["runner_up_probability"].tolist() + [None], dtype=object)[position]
    on_roster = set(roster["person_ref"].tolist())
    decided = {r: p for r, p in (decided or {}).items() if p in on_roster}
    reviewed = np.array([r in decided for r in record_ids], dtype=bool) & ~by_identifier
    reason = np.full(n, None, dtype=object)
    reason[candidate & ~by_identifier & ~reviewed] = [
        review_reason(p, q, review_band, tie_ratio) for p, q in
        zip(best_probability[candidate & ~by_identifier & ~reviewed].tolist(),
            runner_up_p[candidate & ~by_identifier & ~reviewed].tolist(), strict=True)]
    queued = np.array([r is not None for r in reason.tolist()], dtype=bool)
    probabilistic = candidate & above & ~by_identifier & ~reviewed & ~queued

    person_ref = np.full(n, None, dtype=object)
    person_ref[probabilistic] = best_person[probabilistic]
    person_ref[has_nhs] = by_nhs[has_nhs]
    person_ref[has_upn] = by_upn[has_upn]
    person_ref[has_nino] = by_nino[has_nino]
    probability = np.full(n, None, dtype=object)
    probability[candidate] = best_probability[candidate]
    probability[by_identifier] = 1.0
    # a reviewer's link: that pair's probability tonight when it is the best or the runner-up, else None
    for i in np.flatnonzero(reviewed).tolist():
        chosen = decided[record_ids[i]]
        person_ref[i] = chosen
        probability[i] = (best_probability[i] if best_person[i] == chosen else
                          runner_up_p[i] if runner_up[i] == chosen else None)
    method = np.full(n, LinkMethod.UNLINKED, dtype=object)
    method[probabilistic] = LinkMethod.PROBABILISTIC
    method[queued] = LinkMethod.QUEUED
    method[reviewed] = LinkMethod.REVIEWED
    method[has_nhs] = LinkMethod.NHS_NUMBER
    method[has_upn] = LinkMethod.UPN
    method[has_nino] = LinkMethod.NINO
    best_person[by_identifier] = None
    runner_up[by_identifier] = None
    runner_up_p[by_identifier] = None
    doubtful = np.array([m in (LinkMethod.UNLINKED, LinkMethod.QUEUED) and p is not None
                         and p + (q or 0.0) >= DOUBTFUL_FROM
                         for m, p, q in zip(method.tolist(), probability.tolist(), runner_up_p.tolist(),
                                            strict=True)], dtype=bool)
    return pd.DataFrame({"record_id": record_ids, "person_ref": person_ref.tolist(),
                         "match_probability": probability.tolist(), "method": method.tolist(),
                         "best_ref": best_person.tolist(), "runner_up_ref": runner_up.tolist(),
                         "runner_up_probability": runner_up_p.tolist(),
                         "doubtful": doubtful.tolist(), "review_reason": reason.tolist()},
                        columns=RESULT_COLUMNS + REVIEW_COLUMNS, dtype=object)


def _read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    return frame.replace({"": None})


def link_files(roster_path: Path, records_path: Path, out_path: Path, threshold: float = 0.95) -> dict[str, int]:
    """`tfp link`: link a records CSV to a roster CSV (the ``families`` format) and write the result.

    Writes ``record_id,person_ref,match_probability`` for every record, sorted by record_id, with
    ``person_ref`` empty when unlinked and the probability to six decimals (empty when no candidate).
    """
    for what, path in (("roster", roster_path), ("records", records_path)):
        if not Path(path).is_file():  # the path only, never a value from the file
            raise TfpError(f"the {what} file is not there or not a file: {path}",
                           hint="give the path of an existing CSV file")
    roster = _read_csv(Path(roster_path))
    records = _read_csv(Path(records_path))
    for column in ("forename", "surname", "date_of_birth", "sex", "postcode", "nino", "upn"):
        for frame in (roster, records):
            if column not in frame:
                frame[column] = None
    result = link_records(roster, records, threshold=threshold).sort_values("record_id", kind="mergesort")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["record_id", "person_ref", "match_probability"])
        for row in result.itertuples(index=False):
            probability = "" if row.match_probability is None else f"{row.match_probability:.{PROBABILITY_DECIMALS}f}"
            writer.writerow([row.record_id, row.person_ref or "", probability])
    return {"records": int(len(result)), "linked": int(result["person_ref"].notna().sum())}


def run_linking(engine, reference_date: date, threshold: float, review_band: tuple[float, float] | None = None,
                tie_ratio: float = 0.5) -> dict[str, dict[str, int]]:
    """The pipeline stage's linking: per partner dataset, how many records linked and how many did not."""
    return link_night(engine, reference_date, threshold, review_band, tie_ratio)[0]


def link_night(engine, reference_date: date, threshold: float, review_band: tuple[float, float] | None = None,
               tie_ratio: float = 0.5,
               spill_root: Path | None = None) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """The pipeline stage: link the current rows of every partner dataset to the current roster, applying
    the reviewers' decisions as of R (:func:`tfp.review.decisions_as_of`), and replace that reference date's
    ``links`` and ``review_night`` rows in one transaction (re-running gives the same rows).

    Returns (per dataset linked/unlinked, review counts: ``review_queued`` records left for review tonight,
    ``review_decided`` records whose outcome tonight a decision settled, ``review_pending`` pairs queued
    tonight awaiting a decision: the rows ``tfp review export`` writes for R).

    DuckDB spills into ``spill_root/<R>`` (private folders removed when linking ends); what a killed run
    left there is removed first, since only one run of a reference date links at a time."""
    import shutil

    from sqlalchemy import delete

    from tfp.current import current_rows
    from tfp.feeds import DATASETS, OPTIONAL_SOURCES, PARTNER_DATASETS
    from tfp.review import decisions_as_of, record_queue
    from tfp.warehouse import insert_rows, links

    person_columns = ["forename", "surname", "date_of_birth", "sex", "postcode", "nino", "upn", "nhs_number"]
    with engine.connect() as conn:
        roster = current_rows(conn, "families", reference_date)
        parts = []
        for dataset in PARTNER_DATASETS:
            frame = current_rows(conn, dataset, reference_date)
            part = pd.DataFrame({"dataset": dataset, "source_record_id": frame["record_id"].astype(str)})
            for column in person_columns:
                part[column] = frame[column].to_numpy() if column in frame else None
            parts.append(part)
        decisions = decisions_as_of(conn, reference_date)
    records = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    # One Splink run over every dataset: the dataset name makes the record id unique.
    records["record_id"] = records["dataset"] + "|" + records["source_record_id"]
    for column in person_columns:
        if column not in roster:
            roster[column] = None
    rejected = {(f"{d}|{r}", p) for d, r, p in decisions.rejected}
    decided = {f"{d}|{r}": p for (d, r), p in decisions.linked.items()}
    spill_dir = None if spill_root is None else spill_root / reference_date.isoformat()
    if spill_dir is not None and spill_dir.exists():
        for left in spill_dir.glob(f"{SPILL_PREFIX}*"):
            shutil.rmtree(left, ignore_errors=True)

    result = link_records(roster, records, threshold=threshold, review_band=review_band, tie_ratio=tie_ratio,
                          rejected=rejected, decided=decided, spill_dir=spill_dir) if len(records) else \
        pd.DataFrame(columns=RESULT_COLUMNS + REVIEW_COLUMNS)
    result = result.merge(records[["record_id", "dataset", "source_record_id"]], on="record_id")

    rows = {
        "reference_date": [reference_date] * len(result),
        "dataset": result["dataset"].tolist(),
        "record_id": result["source_record_id"].tolist(),
        "person_ref": result["person_ref"].tolist(),
        "method": result["method"].tolist(),
        "match_probability": [None if p is None else round(float(p), PROBABILITY_DECIMALS)
                              for p in result["match_probability"].tolist()],
    }
    # the pairs tonight sends to review: a band record's best candidate, a near-tie's best two
    queued = result[result["method"] == LinkMethod.QUEUED]
    pairs = []
    for row in queued.itertuples(index=False):
        pairs.append((row.dataset, row.source_record_id, row.best_ref, row.review_reason, row.match_probability))
        if row.review_reason == ReviewReason.NEAR_TIE and row.runner_up_ref is not None:
            pairs.append((row.dataset, row.source_record_id, row.runner_up_ref, row.review_reason,
                          row.runner_up_probability))
    with engine.begin() as conn:
        conn.execute(delete(links).where(links.c.reference_date == reference_date))
        insert_rows(conn, links, rows)
        pending = record_queue(conn, reference_date, pairs)

    seen = set(zip(result["dataset"].tolist(), result["source_record_id"].tolist(), strict=True))
    counts: dict[str, dict[str, int]] = {}
    for dataset in PARTNER_DATASETS:
        mine = result[result["dataset"] == dataset]
        if mine.empty and DATASETS[dataset].source in OPTIONAL_SOURCES:
            continue  # an optional source with nothing staged (not configured): counts as before it existed
        linked = int(mine["person_ref"].notna().sum())
        counts[dataset] = {"linked": linked, "unlinked": int(len(mine) - linked)}
    review = {"review_queued": int(len(queued)),
              "review_decided": len(decisions.records() & seen),
              "review_pending": pending}
    return counts, review


def spill_root(config: Config) -> Path:
    """Where DuckDB may spill Splink's pairs: ``work_dir/link-spill`` (a folder per reference date)."""
    return config.work_dir / "link-spill"


def run(ctx: RunContext) -> LinkResult:
    """The link task: link R's partner records at the config's threshold; counts per dataset."""
    from dataclasses import replace

    from tfp.context import LinkResult
    from tfp.feeds import PARTNER_DATASETS
    from tfp.lineage import tables

    linkage = ctx.config.linkage
    per_dataset, review = link_night(ctx.warehouse, ctx.reference_date, linkage.match_probability_threshold,
                                     linkage.review_band, linkage.review_tie_ratio,
                                     spill_root=spill_root(ctx.config))
    result = LinkResult.of(per_dataset, review)
    # the reviewers' decisions are read too; the review queue's pairs and nights are written beside links
    reads = [f"stg_{d}" for d in ("families", *PARTNER_DATASETS)] + ["review_queue", "review_decision"]
    return replace(result, lineage=tables(ctx.warehouse, reads, ["links", "review_queue", "review_night"]))
