"""Issue 18's targets beside the benchmark's figures, the peers side by side, and the time-and-memory chart.

Pure functions of ``results.json`` (``tfp_dev.bench``) and, when another run wrote it, ``backfill.json`` (365
nights through the scheduler): each target's figure, and whether it is met, ``not measured`` when nothing
measured it. A missed target is shown as missed, never left out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from tfp_dev.bench import _fmt

TIME_MEMORY_CHART = "time_memory_by_families.png"
BACKFILL = "backfill.json"
PROFILE_BEFORE = "profile-50000.md"
PROFILE_AFTER = "profile-50000-after.md"
PROFILE_FIXED_COST = "profile-2000-fixed-cost.md"
MEMORY_BUDGET_MB = 1.5 * 1024  # 1.5 GB, as MiB like every peak in results.json
NOT_MEASURED = "not measured"


def _summary(doc: Mapping[str, Any], families: int) -> dict[str, Any] | None:
    for r in doc.get("results", []):
        if r["families"] == families:
            return r["summary"]
    return None


def _median(stat: Mapping[str, Any] | None) -> float | None:
    return stat.get("median") if stat else None


def _number(value: Any) -> float | None:
    """A number from backfill.json, which another tool writes: anything else counts as absent."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _met(value: float | None, limit: float) -> str:
    return NOT_MEASURED if value is None else ("yes" if value <= limit else "no")


def _of(doc: Mapping[str, Any], families: int, key: str, unit: str, digits: int = 1) -> tuple[float | None, str]:
    """A size's median of ``key`` and its text: the figure with its spread and the repeats behind it."""
    s = _summary(doc, families)
    if s is None:
        return None, NOT_MEASURED
    if not s.get("repeats"):
        return None, "the run failed"
    value = _median(s.get(key))
    if value is None:
        return None, NOT_MEASURED
    stat = s[key]
    spread_text = (f", range {stat['min']:.{digits}f}–{stat['max']:.{digits}f}"
                   if stat.get("n", 1) > 1 and stat["max"] > stat["min"] else "")
    return value, f"{value:,.{digits}f} {unit} (median of {s['repeats']}{spread_text})"


def _flat_backfill(b: Mapping[str, Any]) -> Mapping[str, Any]:
    """``tfp_dev.bench_backfill`` writes its figures under ``summary``; the flat keys are read as they are."""
    summary = b.get("summary")
    if not isinstance(summary, Mapping):
        return b
    extrapolated = summary.get("extrapolated_365_nights")
    return {**b, "per_night": summary.get("per_night_s"), "total_s": summary.get("total_s"),
            "byte_identical": summary.get("byte_identical"),
            "extrapolated_365_s": extrapolated.get("seconds") if isinstance(extrapolated, Mapping) else None,
            "nights": b.get("nights", summary.get("nights"))}


def targets(doc: Mapping[str, Any], backfill: Mapping[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(target, figure measured, met?) for each of issue 18's targets."""
    rows: list[tuple[str, str, str]] = []
    value, text = _of(doc, 2000, "wall_s", "s")
    rows.append(("fixed cost: a 2,000-family night ≤ 8 s end to end under `tfp run`", text, _met(value, 8)))

    b = _flat_backfill(backfill or {})
    per_night = b.get("per_night") if isinstance(b.get("per_night"), Mapping) else {}
    nights, families = _number(b.get("nights")), _number(b.get("families"))
    total, extrapolated = _number(b.get("total_s")), _number(b.get("extrapolated_365_s"))
    about = (f" ({nights:,.0f} nights of {families:,.0f} families)" if nights and families else
             f" ({nights:,.0f} nights)" if nights else "")
    median, low, high = (_number(per_night.get(k)) for k in ("median", "min", "max"))
    if median is not None:
        spread_text = f", {low:.1f}–{high:.1f}" if low is not None and high is not None else ""
        rows.append(("fixed cost: ≤ 15 s per night in a scheduler backfill (LocalExecutor)",
                     f"{median:.1f} s per night (median{spread_text}){about}", _met(median, 15)))
    else:
        rows.append(("fixed cost: ≤ 15 s per night in a scheduler backfill (LocalExecutor)", NOT_MEASURED, NOT_MEASURED))

    limit = 45 * 60
    if nights and nights >= 365 and total is not None:
        rows.append(("backfill: 365 nights of a 2,000-family borough through the scheduler ≤ 45 min",
                     f"{total / 60:.1f} min{about}", _met(total, limit)))
    elif extrapolated is not None:
        rows.append(("backfill: 365 nights of a 2,000-family borough through the scheduler ≤ 45 min",
                     f"{extrapolated / 60:.1f} min extrapolated{about}; 365 nights not run",
                     f"{_met(extrapolated, limit)} (extrapolated)"))
    else:
        rows.append(("backfill: 365 nights of a 2,000-family borough through the scheduler ≤ 45 min",
                     NOT_MEASURED, NOT_MEASURED))
    same = b.get("byte_identical") if isinstance(b.get("byte_identical"), bool) else None
    rows.append(("backfill: deliveries byte-identical to single runs",
                 NOT_MEASURED if same is None else f"{'identical' if same else 'DIFFERENT'}{about}",
                 NOT_MEASURED if same is None else ("yes" if same else "no")))

    value, text = _of(doc, 50000, "wall_s", "s")
    rows.append(("big borough: 50,000 families ≤ 75 s end to end", text, _met(value, 75)))
    value, text = _of(doc, 50000, "peak_rss_mb", "MB", 0)
    rows.append(("big borough: peak memory of the whole process tree ≤ 1.5 GB (1,536 MB)", text,
                 _met(value, MEMORY_BUDGET_MB)))

    ratios = [(r["families"], r["summary"].get("validate_vs_pandas"), r["summary"].get("gx_vs_pandas"))
              for r in doc.get("results", []) if r["summary"].get("validate_vs_pandas")]
    if ratios:
        text = "; ".join(f"{n:,}: {_fmt(v, 1)}× (GX alone {_fmt(g, 1)}×)" for n, v, g in ratios)
        rows.append(("validation: the validate stage within 2× the same rules in plain pandas", text,
                     "yes" if all(v["median"] <= 2 for _, v, _ in ratios) else "no"))
    else:
        rows.append(("validation: the validate stage within 2× the same rules in plain pandas", NOT_MEASURED,
                     NOT_MEASURED))
    memory = doc.get("validation_memory")
    if memory:
        rows.append(("validation: memory ≤ 2× the largest file's size",
                     f"{memory['ratio']:.1f}× ({memory['validation_mb']:.0f} MB for a {memory['file_mb']:.0f} MB file)",
                     _met(memory["ratio"], 2)))
    else:
        rows.append(("validation: memory ≤ 2× the largest file's size", NOT_MEASURED, NOT_MEASURED))

    small, large = _median((_summary(doc, 10000) or {}).get("wall_s")), _median((_summary(doc, 50000) or {}).get("wall_s"))
    if small and large:
        rows.append(("growth: 10,000 → 50,000 families ≤ 5× the time",
                     f"×{large / small:.2f} ({small:.1f} s → {large:.1f} s)", _met(large / small, 5)))
    else:
        rows.append(("growth: 10,000 → 50,000 families ≤ 5× the time", NOT_MEASURED, NOT_MEASURED))
    rows.append(_point_200k(doc))
    rows.append(_peers(doc))
    return rows


def _point_200k(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    target = "growth: a 200,000-family night finishes within this machine's memory (reported)"
    s = _summary(doc, 200000)
    if s is None:
        return target, NOT_MEASURED, NOT_MEASURED
    if not s.get("repeats"):
        return target, "the run failed", "no"
    machine_mb = float(doc.get("machine", {}).get("memory_gb", 0)) * 1024
    peak = _median(s.get("peak_rss_mb")) or 0.0
    ten = _median((_summary(doc, 50000) or {}).get("wall_s"))
    grow = f"; ×{s['wall_s']['median'] / ten:.2f} the 50,000-family time" if ten else ""
    text = (f"{_fmt(s['wall_s'])} s, peak {peak:,.0f} MB of {machine_mb:,.0f} MB (median of {s['repeats']}){grow}")
    return target, text, "yes" if not machine_mb or peak < machine_mb else "no"


def _peers(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    target = "peers side by side in one run: Splink directly, pandas validation, a one-process pandas night"
    full = [r for r in doc.get("results", []) if all(r["summary"].get(k) for k in
                                                      ("link_vs_splink", "validate_vs_pandas", "tfp_vs_pandas_night"))]
    if not full:
        return target, NOT_MEASURED, NOT_MEASURED
    text = "; ".join(f"{r['families']:,}: link ÷ Splink {_fmt(r['summary']['link_vs_splink'], 2)}, validate ÷ pandas "
                     f"{_fmt(r['summary']['validate_vs_pandas'], 1)}, tfp ÷ pandas night "
                     f"{_fmt(r['summary']['tfp_vs_pandas_night'], 1)}" for r in full)
    return target, text + " (see Peers)", "yes"


def render_targets(doc: Mapping[str, Any], backfill: Mapping[str, Any] | None = None) -> list[str]:
    """The targets table (Markdown lines): one row per target."""
    lines = ["## Targets (issue 18)", "",
             "Each figure as measured (medians on this 2-core machine; see below for the load each size ran under). "
             "`not measured` means no run behind these files measured it.", "",
             "| target | figure measured | met? |", "|---|---|:---:|"]
    lines += [f"| {t} | {f} | {m} |" for t, f, m in targets(doc, backfill)]
    if backfill:
        lines += ["", f"Backfill figures from [`{BACKFILL}`]({BACKFILL})"
                  + (f": `{backfill['command']}`" if backfill.get("command") else "") + "."]
    return lines


def render_peers(doc: Mapping[str, Any]) -> list[str]:
    """The peers beside `tfp run`, each size on one row: what Airflow, the warehouse and GX cost."""
    lines = ["## Peers, side by side", "",
             "In the same invocation as each `tfp run`, on the same feed files: Splink used directly (against the "
             "`link` stage), the validation rules as plain pandas (against the `validate` stage), and a one-process "
             "pandas night (`python -m tfp_dev.bench_night`: reads every feed file, partner folders included, the same "
             "rules in pandas, exact NHS number/NINO/UPN links then Splink directly for the rest, the criteria by "
             "`tfp_dev.truth`, consent, and the submission, summary and withdrawal CSVs; timed end to end in a process "
             "of its own, interpreter start and imports included, as `tfp run` is). The pandas night writes no "
             "warehouse and encrypts, signs, k-anonymises and suppresses nothing, and writes no progress file, so its "
             "files are not tfp's; the check of equal meaning is the number of eligible families (tfp's exact count "
             "from its run report, the pandas night's, and the generator's truth with true links).", "",
             "| families | tfp run s | pandas night s | tfp ÷ pandas night | tfp peak MB | pandas night peak MB "
             "| link ÷ Splink | validate ÷ pandas | GX ÷ pandas | eligible: tfp / pandas night / truth | same eligible |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in doc.get("results", []):
        s = r["summary"]
        same = {True: "yes", False: "no", None: "–"}[s.get("same_eligible")]
        eligible = " / ".join(_fmt(s.get(k), 0) for k in ("eligible_tfp", "eligible_pandas_night", "eligible_truth"))
        lines.append(
            f"| {r['families']:,} | {_fmt(s.get('wall_s'))} | {_fmt(s.get('pandas_night_s'))} | "
            f"{_fmt(s.get('tfp_vs_pandas_night'), 1)} | {_fmt(s.get('peak_rss_mb'), 0)} | "
            f"{_fmt(s.get('pandas_night_rss_mb'), 0)} | {_fmt(s.get('link_vs_splink'), 2)} | "
            f"{_fmt(s.get('validate_vs_pandas'), 1)} | {_fmt(s.get('gx_vs_pandas'), 1)} | {eligible} | {same} |")
    return lines


def render_profile(present: Collection[str]) -> list[str]:
    """Links to the profiles of a 50,000-family night before and after optimising, where they exist."""
    before = (f"[`{PROFILE_BEFORE}`]({PROFILE_BEFORE}) (`make profile`, before issue 18's optimising)"
              if PROFILE_BEFORE in present else "not measured")
    after = (f"[`{PROFILE_AFTER}`]({PROFILE_AFTER})" if PROFILE_AFTER in present else "not yet measured")
    lines = ["## Profile", "", "Where a 50,000-family night's time goes, by function and by package (py-spy):", "",
             f"- before: {before}", f"- after: {after}"]
    if PROFILE_FIXED_COST in present:
        lines += ["", "Where a 2,000-family night's fixed cost goes, by phase and by import, before and after "
                  f"issue 18's fixed-cost changes: [`{PROFILE_FIXED_COST}`]({PROFILE_FIXED_COST})."]
    return lines


def render_runs(doc: Mapping[str, Any]) -> list[str]:
    """Which invocation measured each size (results accumulate over several), and the load it ran under."""
    lines = []
    for r in doc.get("results", []):
        load = r.get("load_average_at_end")
        lines.append(f"- {r['families']:,} families: `{r.get('command') or doc.get('command')}` on "
                     f"{(r.get('created') or doc.get('created', '?'))[:10]}"
                     + (f", load average (1 min) {load[0]:.1f} at its end" if load else ""))
    memory = doc.get("validation_memory") or {}
    if memory.get("command"):
        lines.append(f"- validation memory: `{memory['command']}` on {memory.get('created', '?')[:10]}")
    return ["Measured by:", "", *lines] if lines else []


def render_time_memory_chart(doc: Mapping[str, Any], path: Path) -> Path:
    """Two panels against families, log-log: seconds (tfp run, the pandas night, Splink directly, the pandas
    rules) and peak memory (tfp's process tree, the pandas night), with the targets marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = doc.get("results", [])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)

    def plot(ax: Any, key: str, label: str, **style: Any) -> None:
        points = [(r["families"], r["summary"].get(key)) for r in results if r["summary"].get(key)]
        if not points:
            return
        xs, stats = [p[0] for p in points], [p[1] for p in points]
        ys = [st["median"] for st in stats]
        err = [[st["median"] - st["min"] for st in stats], [st["max"] - st["median"] for st in stats]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, **style)

    plot(left, "wall_s", "tfp run, end to end", linewidth=2.5, color="black")
    plot(left, "pandas_night_s", "one-process pandas night", linewidth=1.5)
    plot(left, "splink_s", "Splink directly (linking only)", linewidth=1)
    plot(left, "pandas_validate_s", "pandas rules (validation only)", linewidth=1)
    left.scatter([2000, 50000], [8, 75], marker="x", s=80, color="red", zorder=5, label="targets (8 s, 75 s)")
    left.set_ylabel("seconds (median, bars: min–max)")
    left.set_title("time by families")
    plot(right, "peak_rss_mb", "tfp run, whole process tree", linewidth=2.5, color="black")
    plot(right, "pandas_night_rss_mb", "one-process pandas night", linewidth=1.5)
    right.axhline(MEMORY_BUDGET_MB, color="red", linestyle="--", linewidth=1, label="1.5 GB target (50,000 families)")
    memory_gb = doc.get("machine", {}).get("memory_gb")
    if memory_gb:
        right.axhline(memory_gb * 1024, color="grey", linestyle=":", linewidth=1, label="this machine's memory")
    right.set_ylabel("peak resident memory, MB")
    right.set_title("peak memory by families")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    sizes = sorted({r["families"] for r in results} | {2000, 50000})
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}" if y >= 1 else f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("families in the borough")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def read_backfill(path: Path) -> dict[str, Any] | None:
    """``backfill.json`` when it exists and parses as an object; None otherwise (the table says not measured)."""
    import json

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def present_files(out: Path, names: Sequence[str] = (PROFILE_BEFORE, PROFILE_AFTER, PROFILE_FIXED_COST)) -> set[str]:
    return {n for n in names if (out / n).exists()}
