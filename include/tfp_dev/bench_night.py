"""The third peer of the benchmark: the same night as one plain pandas script in one process.

    python -m tfp_dev.bench_night --feeds var/bench/feeds-issue17-2000-20250331 --out /tmp/night

What ``tfp run`` spreads over Airflow tasks, a warehouse and Great Expectations, done here in one process so
that their cost is visible (issue 18): read every feed file of the night (partner folders included), apply
the row-level rules as vectorised pandas (``bench.pandas_bad_rows``), link the valid partner records to the
roster (an NHS number, NINO or UPN equal to a roster person's links outright; Splink used directly,
``bench.splink_direct``, for the rest), compute the six flags with the independent pandas reading of the
criteria (``tfp_dev.truth``), keep the people the lawful basis keeps, and write the night's CSVs.

What it leaves out, so that nobody mistakes it for tfp: no warehouse (nothing persists between nights, so no
as-of history beyond the files in the folder), no encryption (landing copies or delivered files), no manifest
or signature, no k-anonymity, no small-cell suppression or rounding of the summary, no progress file, no
quarantine table or run report, no partner feedback. Its outputs are therefore not byte-identical to tfp's;
the benchmark checks one thing of equal meaning, the number of eligible families.

The last line it prints is JSON: counts and seconds per step, nothing personal.
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
import time
import unicodedata
from collections.abc import Callable
from datetime import date
from hashlib import sha256
from pathlib import Path
from typing import Any

from tfp.feeds import DATASETS

REFERENCE_DATE = date(2025, 3, 31)
ROSTER_DATASETS = ("families", "needs", "consent")
SUBMISSION_COLUMNS = ("reference_date", "la_code", "family_token", "person_token", "mk1", "mk2", "mk3", "mk4", "mk5",
                      "mk_nino", "mk_upn", "mk_nhs", "role", "sex", "year_of_birth", "postcode_district",
                      "programme_status", "attached_month")


def read_night(feeds: Path, reference_date: date) -> dict[str, Any]:
    """Every dataset's rows as of R, strings, with ``_partner``, ``_file``, ``_day`` and ``_row`` columns: the
    newest roster file on or before R; for every other dataset all files on or before R (``as_of`` then keeps a
    ``record_id``'s newest valid row)."""
    import pandas as pd

    from tfp.validate import ROW
    from tfp_dev.bench import feed_files

    found: dict[str, list[tuple[date, str, Path]]] = {}
    for _, partner, dataset, day, path in feed_files(feeds):
        if day <= reference_date:
            found.setdefault(dataset, []).append((day, partner, path))
    out = {}
    for dataset, files in found.items():
        files.sort()
        if dataset == "families":
            files = files[-1:]
        frames = []
        for day, partner, path in files:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            missing = set(DATASETS[dataset].columns) - set(frame.columns)
            if missing - set(DATASETS[dataset].optional):
                raise ValueError(f"{path.name}: required columns missing: {sorted(missing)}")
            frame = frame.assign(**dict.fromkeys(missing, ""))
            frame = frame[list(DATASETS[dataset].columns)]
            frame[ROW] = range(1, len(frame) + 1)
            frames.append(frame.assign(_partner=partner, _file=path.name, _day=day))
        out[dataset] = pd.concat(frames, ignore_index=True)
    return out


def as_of(valid: dict[str, Any]) -> dict[str, Any]:
    """A partner's ``record_id`` seen in several files takes its row from the newest (contract section 3, per
    partner as section 10 says). After validation: a ``record_id`` twice in one file is quarantined, both rows."""
    return {d: rows if d == "families" else
            rows.sort_values("_day", kind="stable").drop_duplicates(["_partner", "record_id"], keep="last")
            for d, rows in valid.items()}


def validate(frames: dict[str, Any], max_bad_row_fraction: float = 0.05) -> tuple[dict[str, Any], int]:
    """Drop the rows that break a row-level rule; fail like tfp when a file has too many. Returns the valid
    rows and the number quarantined."""
    import pandas as pd

    from tfp.validate import ROW
    from tfp_dev.bench import pandas_bad_rows

    valid, quarantined = {}, 0
    for dataset, rows in frames.items():
        keep = pd.Series(True, index=rows.index)
        for (_partner, name, day), part in rows.groupby(["_partner", "_file", "_day"], sort=False):
            bad = part[ROW].isin(set(pandas_bad_rows(part, dataset, day)))
            if len(part) and bad.sum() / len(part) > max_bad_row_fraction:
                raise ValueError(f"{name}: more than {max_bad_row_fraction:.0%} of its rows break a rule")
            keep.loc[part.index] = ~bad.to_numpy()
            quarantined += int(bad.sum())
        valid[dataset] = rows[keep]
    return valid, quarantined


def link(roster: Any, records: dict[str, Any], withdrawn: set[str], threshold: float = 0.95) -> dict[str, Any]:
    """Each partner dataset's valid rows with the ``person_ref`` they count for ("" for nobody): an equal
    NHS number, NINO or UPN first, then Splink used directly on names, date of birth, postcode and sex.
    Anyone who has ever withdrawn is left out of the roster, as tfp keeps only their references."""
    import pandas as pd

    from tfp import identifiers
    from tfp_dev.bench import splink_direct

    people = roster[~roster["person_ref"].isin(withdrawn)].drop_duplicates("person_ref")
    normalise: dict[str, Callable[[str], str]] = {"nhs_number": identifiers.normalise_nhs_number,
                                                   "nino": identifiers.normalise_nino, "upn": str.upper}
    lookups = {}
    for column, fn in normalise.items():
        values = people[column].map(lambda v, fn=fn: fn(v) if v else "")
        unique = values[values != ""].drop_duplicates(keep=False)  # a value two people share links nobody
        lookups[column] = dict(zip(unique, people.loc[unique.index, "person_ref"], strict=True))
    keyed = []
    for dataset, rows in records.items():
        ref = pd.Series("", index=rows.index, dtype=object)
        for column, fn in normalise.items():
            if column in rows:
                found = rows[column].map(lambda v, fn=fn, c=column: lookups[c].get(fn(v)) if v else None)
                ref = ref.where(ref != "", found.fillna(""))
        rows = rows.assign(person_ref=ref, _key=dataset + "|" + rows["_partner"] + "|" + rows["record_id"])
        records[dataset] = rows
        keyed.append(rows.loc[rows["person_ref"] == "", ["_key", "forename", "surname", "date_of_birth", "sex",
                                                          "postcode"]])
    rest = pd.concat(keyed, ignore_index=True).rename(columns={"_key": "record_id"})
    matched = splink_direct(people, rest, threshold) if len(rest) and len(people) else {}
    for dataset, rows in records.items():
        found = rows["_key"].map(matched).fillna("")
        records[dataset] = rows.assign(person_ref=rows["person_ref"].where(rows["person_ref"] != "", found))
    return records


def _hex(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), sha256).hexdigest()


def _letters(value: str) -> str:
    text = unicodedata.normalize("NFKD", value or "")
    return "".join(c for c in text.upper() if "A" <= c <= "Z")


def _match_keys(key: bytes, p: dict[str, str]) -> list[str]:
    fore, sur = _letters(p["forename"]), _letters(p["surname"])
    dob, post = p["date_of_birth"].replace("-", ""), p["postcode"].replace(" ", "").upper()
    sex = p["sex"] if p["sex"] in ("M", "F") else "U"
    recipes = [(fore, sur, dob, post), (fore[:1], sur, dob, post), (fore, sur, dob), (fore[:3], sur[:3], dob, sex),
               (sur, dob, post)]
    keys = [_hex(key, "|".join(r)) if all(r) else "" for r in recipes]
    nino = p["nino"].replace(" ", "").upper()
    return [*keys, *(_hex(key, v) if v else "" for v in (nino, p["upn"], p["nhs_number"]))]


def write_outputs(out: Path, flags: Any, roster: Any, states: Any, kept: set[str], reference_date: date,
                  la_code: str, pseudonym_key: bytes, linkage_key: bytes) -> dict[str, int]:
    """The submission, the summary and the withdrawals as plain (unencrypted, unsuppressed) CSVs."""
    import pandas as pd

    from tfp.warehouse import FLAGS

    out.mkdir(parents=True, exist_ok=True)
    day = f"{reference_date:%Y%m%d}"
    chosen = flags[(flags["eligible"] == 1) | (flags["programme_status"] == "intervention")]
    members = roster[roster["person_ref"].isin(kept) & roster["family_ref"].isin(set(chosen["family_ref"]))]
    members = members.drop_duplicates("person_ref").merge(chosen.drop(columns="programme_status"), on="family_ref")
    rows = []
    for p in members.to_dict("records"):
        rows.append([reference_date.isoformat(), la_code, _hex(pseudonym_key, "family:" + p["family_ref"]),
                     _hex(pseudonym_key, "person:" + p["person_ref"]), *_match_keys(linkage_key, p), p["role"],
                     p["sex"] or "U", p["date_of_birth"][:4], p["postcode"].upper().split(" ")[0],
                     p["programme_status"], p["attached_date"][:7],
                     *(str(p[f]) for f in FLAGS), str(p["problem_count"]), str(p["eligible"])])
    submission = pd.DataFrame(rows, columns=[*SUBMISSION_COLUMNS, *FLAGS, "problem_count", "eligible"])
    submission = submission.sort_values(["family_token", "person_token"])
    submission.to_csv(out / f"tfp_submission_{la_code}_{day}.csv", index=False, lineterminator="\n")
    summary = []
    measures = ("families_assessed", "families_eligible", *FLAGS, "persons_submitted")
    for measure in measures:
        for status in ("intervention", "comparison", "all"):
            fam = flags if status == "all" else flags[flags["programme_status"] == status]
            sub = submission if status == "all" else submission[submission["programme_status"] == status]
            n = {"families_assessed": len(fam), "families_eligible": int(fam["eligible"].sum()),
                 "persons_submitted": len(sub)}.get(measure)
            summary.append([measure, status, n if n is not None else int(fam[measure].sum())])
    pd.DataFrame(summary, columns=["measure", "programme_status", "count"]).to_csv(
        out / f"tfp_summary_{la_code}_{day}.csv", index=False, lineterminator="\n")
    gone = states[states["consent_state"] == "withdrawn"]
    withdrawals = sorted([_hex(pseudonym_key, "person:" + r), on] for r, on in
                         zip(gone["person_ref"], gone["consent_state_on"], strict=True))
    pd.DataFrame(withdrawals, columns=["person_token", "withdrawn_on"]).to_csv(
        out / f"tfp_withdrawals_{la_code}_{day}.csv", index=False, lineterminator="\n")
    return {"persons_submitted": len(submission), "summary_rows": len(summary), "withdrawals": len(withdrawals)}


def pandas_night(feeds: Path, out: Path, reference_date: date = REFERENCE_DATE, *, lawful_basis: str = "consent",
                 min_problems: int = 2, threshold: float = 0.95, la_code: str = "E09000031",
                 pseudonym_key: bytes | None = None, linkage_key: bytes | None = None) -> dict[str, Any]:
    """The whole night in this process; counts and seconds per step."""
    import os

    from tfp_dev import truth

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = now - clock
        clock = now

    frames = read_night(feeds, reference_date)
    rows_read = sum(len(f) for f in frames.values())
    lap("read")
    valid, quarantined = validate(frames)
    valid = as_of(valid)
    lap("validate")
    roster, needs, consent = (valid[d] for d in ROSTER_DATASETS)
    records = {d: f for d, f in valid.items() if d not in ROSTER_DATASETS}
    withdrawn = truth.ever_withdrawn(consent, reference_date)
    records = link(roster, records, withdrawn, threshold)
    linked = sum(int((f["person_ref"] != "").sum()) for f in records.values())
    lap("link")
    states = truth.consent_states(consent, roster, reference_date)
    kept = truth.kept_persons(states, lawful_basis)
    counted = {d: f[f["person_ref"] != ""] for d, f in records.items()}
    hits = truth.person_flags(roster, needs, counted, reference_date)
    flags = truth.family_flags(roster, hits, reference_date, kept=kept, min_problems=min_problems)
    lap("criteria")
    written = write_outputs(out, flags, roster, states, kept, reference_date, la_code,
                            pseudonym_key or os.urandom(32), linkage_key or os.urandom(32))
    lap("write")
    return {"rows_read": rows_read, "rows_quarantined": quarantined, "records_linked": linked,
            "records_unlinked": sum(len(f) for f in records.values()) - linked,
            "families_assessed": len(flags), "families_eligible": int(flags["eligible"].sum()), **written,
            "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfp_dev.bench_night", description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=Path, required=True, help="a generated borough (tfp generate --out)")
    parser.add_argument("--out", type=Path, required=True, help="where the night's CSVs go")
    parser.add_argument("--date", type=date.fromisoformat, default=REFERENCE_DATE)
    parser.add_argument("--lawful-basis", choices=("consent", "public_task"), default="consent")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    figures = pandas_night(args.feeds, args.out, args.date, lawful_basis=args.lawful_basis)
    figures["seconds"]["total_in_process"] = time.perf_counter() - start
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def truth_eligible(feeds: Path, lawful_basis: str = "consent") -> int | None:
    """Eligible families in the generator's truth (true links, the same lawful basis), when it was written."""
    import csv

    path = feeds / "truth" / f"families_{lawful_basis}.csv"
    if not path.exists():
        return None
    with path.open(encoding="utf-8", newline="") as handle:
        return sum(1 for row in csv.DictReader(handle) if row["eligible"] == "1")


def night_peer(feeds: Path, run_dir: Path, tfp_wall_s: float, tfp_eligible: int | None,
               tfp_counts: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pandas night in a process of its own, timed end to end (interpreter start and imports included,
    as ``tfp run``'s are) with the peak resident memory of that process, beside the ``tfp run`` of the same
    feeds; and whether both find the same number of eligible families (tfp's exact count from its run report)."""
    import subprocess

    from tfp_dev.bench import PeakRss, _clean_env

    out = run_dir / "pandas-night"
    with (run_dir / "pandas-night.log").open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "tfp_dev.bench_night", "--feeds", str(feeds), "--out", str(out)],
                                cwd=run_dir, env=_clean_env({}), stdout=subprocess.PIPE, stderr=log)
        with PeakRss(proc.pid) as rss:
            stdout, _ = proc.communicate()
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"succeeded": False, "returncode": proc.returncode, "wall_s": wall}
    figures = json.loads(stdout.decode().strip().splitlines()[-1])
    eligible = figures["families_eligible"]
    return {"succeeded": True, "wall_s": wall, "peak_rss_mb": rss.peak / 2**20, "steps_s": figures["seconds"],
            "counts": {k: v for k, v in figures.items() if k != "seconds"},
            "ratio": tfp_wall_s / wall if wall else None,
            "eligible_pandas": eligible, "eligible_tfp": tfp_eligible, "eligible_truth": truth_eligible(feeds),
            "same_eligible": None if tfp_eligible is None else eligible == tfp_eligible,
            # the rows read and quarantined should agree exactly (same files, same rules); links may not
            "same_rows": {k: figures[k] == (tfp_counts or {}).get(k) for k in ("rows_read", "rows_quarantined")}}
