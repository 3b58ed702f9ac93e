"""Offline training of the linkage model that ``tfp.link`` loads (``models/linkage_model.json``).

Run it by hand (``make train-linkage``) and commit the JSON; the pipeline never re-estimates it:

    .venv/bin/python -m tfp_dev.link_training --families 3000 --seed 20250331

It generates a synthetic borough with ``tfp generate`` (whose ``truth/records.csv`` names the true
roster person of every partner record), and estimates:

- m values from the labelled true pairs (every valid record paired with its true roster person);
- u values by random sampling of roster x record pairs (almost all of them non-matches);
- the prior is not learned: ``tfp.link`` sets it from the roster size at inference (1/N odds), and
  the JSON carries the training roster's 1/N only as a sensible default.

The comparisons are written as plain SQL levels on normalised columns (see
``tfp.link.comparison_frame``) so that the JSON says exactly what is compared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from tfp.link import MODEL_PATH, comparison_frame, quiet_splink

SWAPPED = "forename_l = surname_r AND surname_l = forename_r AND forename_l <> surname_l"


def _level(sql: str, label: str, *, null: bool = False) -> dict[str, Any]:
    level: dict[str, Any] = {"sql_condition": sql, "label_for_charts": label}
    if null:
        level["is_null_level"] = True
    return level


def _jw(column: str, threshold: float) -> str:
    return f"jaro_winkler_similarity({column}_l, {column}_r) >= {threshold}"


def comparisons() -> list[dict[str, Any]]:
    """Forename, surname, date of birth, postcode and sex, each with levels from exact to else."""
    forename = [
        _level("forename_l IS NULL OR forename_r IS NULL", "null", null=True),
        _level(SWAPPED, "forename and surname swapped"),
        _level("forename_l = forename_r", "exact"),
        _level("forename_first_l = forename_first_r", "same first forename"),
        _level("list_has_any(forename_names_l, forename_names_r)", "a nickname of the same name"),
        _level(_jw("forename", 0.92), "Jaro-Winkler >= 0.92"),
        _level(_jw("forename", 0.85), "Jaro-Winkler >= 0.85"),
        _level("left(forename_l, 1) = left(forename_r, 1)", "same initial"),
        _level("ELSE", "else"),
    ]
    surname = [
        _level("surname_l IS NULL OR surname_r IS NULL", "null", null=True),
        _level(SWAPPED, "forename and surname swapped"),
        _level("surname_l = surname_r", "exact"),
        _level("list_has_any(surname_tokens_l, surname_tokens_r)", "a shared part (double-barrelled)"),
        _level(_jw("surname", 0.92), "Jaro-Winkler >= 0.92"),
        _level(_jw("surname", 0.85), "Jaro-Winkler >= 0.85"),
        _level("ELSE", "else"),
    ]
    dob = [
        _level("dob_l IS NULL OR dob_r IS NULL", "null", null=True),
        _level("dob_l = dob_r", "exact"),
        _level("dob_l = dob_swap_r", "day and month swapped"),
        _level("damerau_levenshtein(dob_l, dob_r) <= 1", "one digit wrong or two adjacent swapped"),
        _level("abs(date_diff('day', CAST(dob_l AS DATE), CAST(dob_r AS DATE))) <= 366", "within a year"),
        _level("ELSE", "else"),
    ]
    # A partial postcode (district or sector only) that agrees as far as it goes is its own level:
    # it is weaker than a full match but, unlike two full postcodes that differ within a district
    # (a move), no sign against the pair.
    partial = "(postcode_l IS NULL OR postcode_r IS NULL)"
    postcode = [
        _level("(postcode_l IS NULL AND postcode_area_l IS NULL) OR (postcode_r IS NULL AND postcode_area_r IS NULL)",
               "null", null=True),
        _level("postcode_l = postcode_r", "exact"),
        _level(f"{partial} AND postcode_sector_l = postcode_sector_r", "partial, agrees to the sector"),
        _level(f"{partial} AND (postcode_sector_l IS NULL OR postcode_sector_r IS NULL) "
               "AND postcode_district_l = postcode_district_r", "partial, agrees to the district"),
        _level("postcode_sector_l = postcode_sector_r", "sector"),
        _level("postcode_district_l = postcode_district_r", "district"),
        _level("postcode_area_l = postcode_area_r", "area"),
        _level("ELSE", "else"),
    ]
    sex = [
        _level("sex_l IS NULL OR sex_r IS NULL", "null", null=True),
        _level("sex_l = sex_r", "exact"),
        _level("ELSE", "else"),
    ]
    return [
        {"output_column_name": name, "comparison_description": name, "comparison_levels": levels}
        for name, levels in (("forename", forename), ("surname", surname), ("dob", dob),
                             ("postcode", postcode), ("sex", sex))
    ]


# Several rules so that one wrong value never hides a true pair: name swaps, day/month swaps, a move.
BLOCKING_RULES = [
    "l.dob = r.dob",
    "l.surname = r.surname AND l.yob = r.yob",
    "l.forename = r.forename AND l.surname = r.surname",
    "l.postcode = r.postcode AND l.yob = r.yob",
    # The household when a date is missing (a parent and child of one name are then both candidates);
    # only then, as a whole family's members share postcode and surname.
    "l.postcode = r.postcode AND l.surname = r.surname AND (l.dob IS NULL OR r.dob IS NULL)",
    "l.forename = r.surname AND l.surname = r.forename",
    "l.dob = r.dob_swap",
]


def base_settings(prior: float = 1e-4) -> dict[str, Any]:
    return {
        "link_type": "link_only",
        "unique_id_column_name": "unique_id",
        "probability_two_random_records_match": prior,
        "blocking_rules_to_generate_predictions": [
            {"blocking_rule": rule, "sql_dialect": "duckdb"} for rule in BLOCKING_RULES
        ],
        "comparisons": comparisons(),
        "retain_matching_columns": False,
        "retain_intermediate_calculation_columns": False,
        "additional_columns_to_retain": [],
        "sql_dialect": "duckdb",
    }


# Floors so that a level unseen in synthetic training never becomes proof: real partners make errors
# the generator does not (a middle name used as forename, a wrong sex), so no disagreement may be
# treated as impossible for a true match (m >= 1e-3, about -10 bits at worst for one field).
MIN_M_PROBABILITY = 1e-3
MIN_U_PROBABILITY = 1e-6


def train(roster: pd.DataFrame, records: pd.DataFrame, truth: dict[str, str], seed: int,
          max_pairs: float = 5e6) -> dict[str, Any]:
    """Estimate m (labelled pairs) and u (random pairs) and return the settings dict to save."""
    from splink import DuckDBAPI, Linker

    quiet_splink()
    roster_table = comparison_frame(roster, "person_ref")
    records_table = comparison_frame(records, "record_id")
    labels = pd.DataFrame({
        "source_dataset_l": "roster", "unique_id_l": [truth[r] for r in records["record_id"] if r in truth],
        "source_dataset_r": "records", "unique_id_r": [r for r in records["record_id"] if r in truth],
    })
    db_api = DuckDBAPI(":memory:")
    db_api.duckdb_con.execute("SET enable_progress_bar = false")
    roster_sdf = db_api.register(roster_table, table_name="roster")
    records_sdf = db_api.register(records_table, table_name="records")
    linker = Linker([roster_sdf, records_sdf], base_settings(1.0 / (len(roster) + 1)), log_level=None)
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed, min_count_per_level=None)
    labels_sdf = db_api.register(labels, table_name="labels")
    linker.training.estimate_m_from_pairwise_labels(labels_sdf)
    model = linker.misc.save_model_to_json()
    db_api.duckdb_con.close()
    for comparison in model["comparisons"]:
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            level["m_probability"] = max(float(level.get("m_probability") or 0.0), MIN_M_PROBABILITY)
            level["u_probability"] = max(float(level.get("u_probability") or 0.0), MIN_U_PROBABILITY)
    model.pop("linker_uid", None)
    return model


# Share of training records whose postcode is cut to the district or the sector, so that the partial
# levels are learned from pairs (the generator writes full postcodes only).
PARTIAL_POSTCODE_SHARE = 0.06


def with_partial_postcodes(records: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Cut a share of the records' postcodes to ``E17`` or ``E17 4`` (true and false pairs alike)."""
    import random

    r = random.Random(seed)
    records = records.copy()
    cut = []
    for value in records["postcode"].tolist():
        text = (value or "").strip()
        if " " in text and r.random() < PARTIAL_POSTCODE_SHARE:
            outward, inward = text.split(" ", 1)
            text = outward if r.random() < 0.5 else f"{outward} {inward[:1]}"
        cut.append(text or None)
    records["postcode"] = cut
    return records


def training_data(families: int, seed: int, on: date) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Roster, valid partner records (with a unique key) and record key -> true person_ref."""
    from tfp.feeds import PARTNER_DATASETS
    from tfp_dev.generate import generate

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        generate(out, families=families, seed=seed, on=on)
        roster, records, truth = read_generated(out, PARTNER_DATASETS)
    return roster, with_partial_postcodes(records, seed), truth


def read_generated(out: Path, datasets) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Read a generated borough: the newest roster, every valid partner record, and its truth."""
    from tfp.feeds import DATASETS

    def read(path: Path) -> pd.DataFrame:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig").replace({"": None})

    roster = read(sorted((out / "children_services").glob("families_*.csv"))[-1])
    truth = read(out / "truth" / "records.csv")
    truth = truth[truth["valid"] == "Y"]
    parts = []
    for dataset in datasets:
        source = DATASETS[dataset].source
        for path in sorted((out / source).glob(f"{dataset}_*.csv")):
            frame = read(path)
            frame["dataset"] = dataset
            parts.append(frame)
    records = pd.concat(parts, ignore_index=True)
    records = records.drop_duplicates(["dataset", "record_id"], keep="last")
    records = records.merge(truth[["dataset", "record_id", "person_ref"]].rename(columns={"person_ref": "true_ref"}),
                            on=["dataset", "record_id"])  # keeps only valid records
    records["record_id"] = records["dataset"] + "|" + records["record_id"]
    for column in ("nino", "upn"):
        if column not in records:
            records[column] = None
    known = set(roster["person_ref"])
    mapping = {k: v for k, v in zip(records["record_id"], records["true_ref"], strict=True) if v and v in known}
    return roster, records, mapping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the linkage model on a generated borough.")
    parser.add_argument("--families", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=20250331)
    parser.add_argument("--date", type=date.fromisoformat, default=date(2025, 3, 31))
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--max-pairs", type=float, default=5e6)
    args = parser.parse_args(argv)
    roster, records, truth = training_data(args.families, args.seed, args.date)
    model = train(roster, records, truth, seed=args.seed, max_pairs=args.max_pairs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"trained on {len(roster)} roster persons and {len(records)} records "
          f"({len(truth)} labelled pairs); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
