"""Score ``tfp link`` on data nobody here made, beside Splink used directly on the same files.

    python -m tfp_dev.linkage_eval            # every set; writes bench/linkage-eval.md and .png
    python -m tfp_dev.linkage_eval --quick    # FEBRL 1 and RLdata500 only

For each set (see ``tfp_dev.linkage_data``) it links with exactly what the pipeline runs
(``tfp.link.link_records`` with the versioned model, default threshold) and with Splink as its
documentation shows it (standard comparisons, u by random sampling, EM on the set itself), then
reports precision, recall and F1 at the default threshold, Splink's best F1 over all thresholds,
and both precision-recall curves. A link counts as right only if it names the record's true person;
a record of nobody that is linked is a false positive.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tfp_dev.linkage_data import Case, all_cases

REPO = Path(__file__).resolve().parents[2]
DEFAULT_THRESHOLD = 0.95


def scores(best: pd.DataFrame, truth: dict[str, str], threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of each record's best candidate kept at ``threshold``.

    ``best`` has record_id, person_ref (the best candidate, or None) and match_probability.
    """
    kept = best[best["person_ref"].notna() & (best["match_probability"].astype(float) >= threshold)]
    correct = int(sum(truth.get(r) == p for r, p in zip(kept["record_id"], kept["person_ref"], strict=True)))
    precision = correct / len(kept) if len(kept) else 1.0
    recall = correct / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "links": int(len(kept)),
            "wrong": int(len(kept) - correct)}


def curve(best: pd.DataFrame, truth: dict[str, str]) -> dict[str, list[float]]:
    """Precision and recall at every distinct probability (the precision-recall curve)."""
    frame = best[best["person_ref"].notna()].copy()
    frame["p"] = frame["match_probability"].astype(float)
    frame["right"] = [truth.get(r) == p for r, p in zip(frame["record_id"], frame["person_ref"], strict=True)]
    frame = frame.sort_values("p", ascending=False, kind="mergesort")
    right = frame["right"].cumsum().to_numpy()
    count = pd.RangeIndex(1, len(frame) + 1).to_numpy()
    last = ~frame["p"].duplicated(keep="last").to_numpy()
    total = max(len(truth), 1)
    return {"threshold": frame["p"].to_numpy()[last].tolist(),
            "precision": (right / count)[last].tolist(), "recall": (right / total)[last].tolist()}


def best_threshold(best: pd.DataFrame, truth: dict[str, str]) -> tuple[float, dict[str, float]]:
    points = curve(best, truth)
    top, top_t = -1.0, DEFAULT_THRESHOLD
    for t, p, r in zip(points["threshold"], points["precision"], points["recall"], strict=True):
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 > top:
            top, top_t = f1, t
    return top_t, scores(best, truth, top_t)


def best_candidates(con: Any, predictions: str) -> pd.DataFrame:
    """Each record's most probable roster person in a Splink prediction table (DuckDB), ties by person_ref.

    The one reading of Splink's pairwise output into tfp's shape (one candidate per record), shared
    by this evaluation and the benchmark's Splink peer so that both score Splink the same way.
    Columns: record_id, person_ref, match_probability.
    """
    return con.execute(f"""
        SELECT record_id, person_ref, match_probability FROM (
            SELECT CASE WHEN source_dataset_l = 'records' THEN unique_id_l ELSE unique_id_r END AS record_id,
                   CASE WHEN source_dataset_l = 'records' THEN unique_id_r ELSE unique_id_l END AS person_ref,
                   match_probability,
                   row_number() OVER (PARTITION BY CASE WHEN source_dataset_l = 'records' THEN unique_id_l
                                                        ELSE unique_id_r END
                                      ORDER BY match_probability DESC, person_ref) AS rank
            FROM {predictions}) WHERE rank = 1
    """).df()


def run_tfp(case: Case) -> pd.DataFrame:
    from tfp.link import link_records

    result = link_records(case.roster, case.records, threshold=0.0)
    return result.rename(columns={"person_ref": "person_ref"})[["record_id", "person_ref", "match_probability"]]


def run_splink(case: Case) -> pd.DataFrame:
    """Splink used directly: documented comparisons, trained on the set itself, each record's best."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    from tfp.link import quiet_splink

    quiet_splink()

    def frame(data: pd.DataFrame, id_column: str) -> pd.DataFrame:
        def text(column: str) -> pd.Series:
            s = data[column].astype("object")
            return s.where(s.notna() & (s.astype(str).str.strip() != ""), None).str.upper()

        dob = pd.to_datetime(data["date_of_birth"], errors="coerce")
        return pd.DataFrame({"unique_id": data[id_column].astype(str), "forename": text("forename"),
                             "surname": text("surname"),
                             "dob": dob.dt.strftime("%Y-%m-%d").where(dob.notna(), None),
                             "postcode": text("postcode")})

    roster, records = frame(case.roster, "person_ref"), frame(case.records, "record_id")
    has_postcode = roster["postcode"].notna().any() and records["postcode"].notna().any()
    settings = SettingsCreator(
        link_type="link_only",
        comparisons=[cl.NameComparison("forename"), cl.NameComparison("surname"),
                     cl.DateOfBirthComparison("dob", input_is_string=True)]
        + ([cl.PostcodeComparison("postcode")] if has_postcode else []),
        blocking_rules_to_generate_predictions=[block_on("forename", "surname"), block_on("dob")]
        + ([block_on("postcode", "surname")] if has_postcode else []),
        retain_matching_columns=False,
    )
    db_api = DuckDBAPI(":memory:")
    try:
        db_api.duckdb_con.execute("SET enable_progress_bar = false")
        left = db_api.register(roster, table_name="roster")
        right = db_api.register(records, table_name="records")
        linker = Linker([left, right], settings, log_level=None)
        linker.training.estimate_probability_two_random_records_match(
            [block_on("forename", "dob"), block_on("surname", "dob")], recall=0.8)
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
        for rule in (block_on("forename", "surname"), block_on("dob")):
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(rule)
            except ValueError:  # every blocked pair a match (EM's share reaches 1): keep the other session's
                pass
        predictions = linker.inference.predict(threshold_match_probability=0.01)
        best = best_candidates(db_api.duckdb_con, predictions.physical_name)
    finally:
        db_api.duckdb_con.close()
    return best


def evaluate(case: Case, splink: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    mine = run_tfp(case)
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {
        "set": case.name, "note": case.note, "roster": len(case.roster), "records": len(case.records),
        "true_pairs": len(case.truth), "tfp": scores(mine, case.truth, DEFAULT_THRESHOLD),
        "tfp_seconds": seconds, "tfp_curve": curve(mine, case.truth),
    }
    row["tfp_best_threshold"], row["tfp_best"] = best_threshold(mine, case.truth)
    if splink:
        theirs = run_splink(case)
        row["splink"] = scores(theirs, case.truth, DEFAULT_THRESHOLD)
        row["splink_best_threshold"], row["splink_best"] = best_threshold(theirs, case.truth)
        row["splink_curve"] = curve(theirs, case.truth)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data set | roster | records | true pairs | tfp precision | tfp recall | tfp F1 | wrong links | "
        "tfp best F1 (threshold) | Splink precision | Splink recall | Splink F1 | Splink best F1 (threshold) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r["tfp"]
        s = r.get("splink")
        splink = (f"{s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | "
                  f"{r['splink_best']['f1']:.3f} ({r['splink_best_threshold']:.2f})") if s else "- | - | - | -"
        lines.append(f"| {r['set']} | {r['roster']:,} | {r['records']:,} | {r['true_pairs']:,} | "
                     f"{t['precision']:.4f} | {t['recall']:.3f} | {t['f1']:.3f} | {t['wrong']} | "
                     f"{r['tfp_best']['f1']:.3f} ({r['tfp_best_threshold']:.2f}) | {splink} |")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    lines = (len(rows) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3.4 * lines), squeeze=False)
    for ax, r in zip(axes.flat, rows, strict=False):
        ax.plot(r["tfp_curve"]["recall"], r["tfp_curve"]["precision"], label="tfp link")
        if "splink_curve" in r:
            ax.plot(r["splink_curve"]["recall"], r["splink_curve"]["precision"], label="Splink direct")
        t = r["tfp"]
        ax.plot([t["recall"]], [t["precision"]], "o", color="C0", label=f"tfp at {DEFAULT_THRESHOLD}")
        ax.set_title(r["set"], fontsize=9)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0.8, 1.005)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(rows: list[dict[str, Any]], chart_name: str) -> str:
    return "\n".join([
        "## Linkage on data nobody here made",
        "",
        f"`make linkage-eval` (`python -m tfp_dev.linkage_eval`). tfp: `tfp.link.link_records` with the versioned "
        f"model at the default threshold {DEFAULT_THRESHOLD}; Splink: used directly with its documented comparisons "
        "(NameComparison, DateOfBirthComparison, PostcodeComparison), trained by EM on the set being scored. "
        "Inputs are forename, surname, date of birth, postcode (and sex where the set has it); no NINO or UPN. "
        "Wrong links = links to the wrong person or to someone with no person on the roster.",
        "",
        table(rows),
        "",
        "| data set | how it is split |",
        "|---|---|",
        *[f"| {r['set']} | {r['note']} |" for r in rows],
        "",
        f"![precision-recall curves]({chart_name})",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfp_dev.linkage_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="FEBRL 1 and RLdata500 only")
    parser.add_argument("--no-splink", action="store_true", help="skip Splink used directly")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "linkage-eval.md")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("splink").setLevel(logging.ERROR)
    rows = []
    for case in all_cases(quick=args.quick):
        rows.append(evaluate(case, splink=not args.no_splink))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.with_suffix(".png")
    chart(rows, png)
    args.out.write_text(report(rows, png.name), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(
        [{k: v for k, v in r.items() if not k.endswith("_curve")} for r in rows], indent=2) + "\n")
    print(f"wrote {args.out} and {png.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
