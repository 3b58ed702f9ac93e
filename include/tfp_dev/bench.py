"""The nightly benchmark (``python -m tfp_dev.bench``, ``make bench``): how long a borough's night takes.

For each size it generates a borough with ``tfp generate``, runs the real nightly DAG through
``tfp run`` in a subprocess (directory transports, age encryption on, a fresh warehouse and a fresh
Airflow home per run), and records the input rows, each stage's time (from the task instances in
that run's Airflow metadata database), the end-to-end wall time, the peak resident memory of the
process tree and rows per second. Beside each run it times two peers on the same data: Splink used
directly with a plain configuration (against the ``link`` stage, with both F1 scores against the
generator's truth), and the validation rules written as plain vectorised pandas (against the
``validate`` stages and against Great Expectations in this process, checking that both quarantine
the same rows), and the whole night as one plain pandas script in one process (``tfp_dev.bench_night``,
against ``tfp run``, checking that both find as many eligible families).

Every figure is the median of the repeats, with the minimum and maximum kept for the spread. It
writes ``results.json``, ``results.md`` (issue 18's targets beside their figures, then the tables the README's
performance section includes), ``time_per_stage.png`` and ``time_memory_by_families.png``; sizes measured by an
earlier invocation into the same folder are kept (``--fresh`` starts over). Nothing personal is printed: counts, times and paths only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from tfp.feeds import ALL_SOURCES, SOURCES

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DATE = date(2025, 3, 31)
SEED = 20250331
LA = "E09000031"
STAGES = ("setup", "extract", "validate", "stage", "link", "feedback", "consent", "criteria", "package", "deliver",
          "report")
SCHEMA_VERSION = 2  # 2: the one-process pandas night, per-size commands, results kept across invocations
TFP = str(Path(sys.executable).with_name("tfp"))


@dataclass(frozen=True)
class Shape:
    """What a benchmark borough holds: the optional sources and how sources are split among partners."""

    name: str
    health: bool = False
    support: bool = False
    partners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def sources(self) -> tuple[str, ...]:
        return (*SOURCES, *(("health",) if self.health else ()), *(("support_services",) if self.support else ()))

    def describe(self) -> str:
        split = "; ".join(f"{s} among {len(ids)} partners ({', '.join(ids)})" for s, ids in self.partners.items())
        return f"{len(self.sources)} sources ({', '.join(self.sources)})" + (f"; {split}" if split else "")


# Issue 17 item 5: a borough with several partners per source and the health and support_services sources
# (the default), and the six sources with one partner each that the figures before issue 17 were measured on.
SHAPES: dict[str, Shape] = {
    "issue17": Shape("issue17", health=True, support=True,
                     partners={"housing": ("clarion", "peabody", "hyde"), "probation": ("nps", "crc")}),
    "six": Shape("six"),
}
DEFAULT_SHAPE = "issue17"


# ---------------------------------------------------------------------------------------------
# Pure parts: statistics, stage grouping, the table


def spread(values: Iterable[float | None]) -> dict[str, Any] | None:
    """Median, minimum and maximum of the repeats (None when there is no value): the machine is noisy."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def stage_of(task_id: str) -> str:
    """The nightly stage a task belongs to: ``police.validate`` and ``housing.clarion.validate`` -> validate;
    ``check_setup``, ``choose_sources`` (the branch that picks the run's source groups) and ``check_inputs``
    (the gate after staging) -> setup."""
    name = task_id.rsplit(".", 1)[-1]
    return "setup" if name in ("check_setup", "choose_sources", "check_inputs") else name


def stage_times(task_instances: Iterable[tuple[str, float | None]]) -> dict[str, float]:
    """Seconds per stage: the durations of its task instances added up (tasks run one at a time)."""
    out = dict.fromkeys(STAGES, 0.0)
    for task_id, duration in task_instances:
        stage = stage_of(task_id)
        out[stage] = out.get(stage, 0.0) + float(duration or 0.0)
    return out


def f1_score(predicted: dict[str, str | None], truth: dict[str, str]) -> dict[str, float]:
    """Precision, recall and F1 of record -> person links against the true pairs.

    ``truth`` holds every record whose true person is on the roster; a link to anyone else is a
    false positive, a true pair not linked (or linked wrongly) a false negative.
    """
    links = {r: p for r, p in predicted.items() if p}
    correct = sum(1 for r, p in links.items() if truth.get(r) == p)
    precision = correct / len(links) if links else 0.0
    recall = correct / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "links": len(links), "true_pairs": len(truth)}


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One size's summary over its successful repeats: every figure as median, min and max."""
    ok = [r for r in runs if r.get("succeeded")]

    def of(key: str, part: str | None = None) -> dict[str, Any] | None:
        return spread((r.get(part) or {}).get(key) if part else r.get(key) for r in ok)

    return {
        "repeats": len(ok),
        "wall_s": of("wall_s"),
        "night_s": of("night_s"),
        "peak_rss_mb": of("peak_rss_mb"),
        "rows_per_s": of("rows_per_s"),
        "stages_s": {s: spread(r["stages_s"].get(s) for r in ok) for s in STAGES},
        "link_vs_splink": of("ratio", "splink"),
        "splink_s": of("seconds", "splink"),
        "f1_tfp": of("f1_tfp", "splink"),
        "f1_splink": of("f1_splink", "splink"),
        "validate_vs_pandas": of("stage_ratio", "pandas"),
        "gx_vs_pandas": of("gx_ratio", "pandas"),
        "pandas_validate_s": of("pandas_s", "pandas"),
        "gx_validate_s": of("gx_s", "pandas"),
        "same_quarantine": all((r.get("pandas") or {}).get("same_quarantine", False) for r in ok) if ok else None,
        **night_summary(ok),
    }


def night_summary(ok: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The one-process pandas night's figures over the runs that measured it (``tfp_dev.bench_night``)."""
    nights = [r["night"] for r in ok if (r.get("night") or {}).get("succeeded")]

    def of(key: str) -> dict[str, Any] | None:
        return spread(n.get(key) for n in nights)

    same = [n.get("same_eligible") for n in nights if n.get("same_eligible") is not None]
    return {"pandas_night_s": of("wall_s"), "pandas_night_rss_mb": of("peak_rss_mb"),
            "tfp_vs_pandas_night": of("ratio"), "eligible_tfp": of("eligible_tfp"),
            "eligible_pandas_night": of("eligible_pandas"), "eligible_truth": of("eligible_truth"),
            "same_eligible": all(same) if same else None}


def comparable(previous: Mapping[str, Any] | None, doc: Mapping[str, Any]) -> bool:
    """Whether an earlier results.json measured the same thing (schema, borough shape, seed, reference date), so
    that its sizes may stand beside this invocation's."""
    if not previous:
        return False
    return all(previous.get(k) == doc.get(k) for k in ("schema", "seed", "reference_date")) and (
        (previous.get("shape") or {}).get("name") == (doc.get("shape") or {}).get("name"))


def carry_over(previous: Mapping[str, Any] | None, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with an earlier comparable invocation's sizes that this one does not measure, so that separate
    invocations (2,000 x 3, 10,000 x 3, 50,000 x 1, 200,000 x 1: a 2-core machine cannot do them in one
    sitting) accumulate into one results.json. A size measured again replaces the earlier figures; each size
    keeps the command and date that measured it; the validation memory and the notes are carried over too."""
    if not comparable(previous, doc):
        return doc
    assert previous is not None
    measured = {r["families"] for r in doc["results"]}  # a size measured again replaces these when it is done
    kept = [{"command": previous.get("command"), "created": previous.get("created"), **r}
            for r in previous.get("results", []) if r["families"] not in measured]
    doc["results"] = sorted([*kept, *doc["results"]], key=lambda r: r["families"])
    doc["scaling"] = scaling(doc["results"])
    if previous.get("validation_memory") and not doc.get("validation_memory"):
        doc["validation_memory"] = {"command": previous.get("command"), "created": previous.get("created"),
                                    **previous["validation_memory"]}
    doc["notes"] = [*previous.get("notes", []), *(n for n in doc.get("notes", []) if n not in previous.get("notes", []))]
    return doc


def scaling(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """How many times longer each size's night takes than the previous size's (end-to-end medians)."""
    done = [r for r in results if (r["summary"].get("wall_s") or {}).get("median")]
    out = {}
    for small, large in zip(done, done[1:], strict=False):
        out[f"{small['families']}->{large['families']}"] = (
            large["summary"]["wall_s"]["median"] / small["summary"]["wall_s"]["median"])
    return out


def _fmt(stat: dict[str, Any] | None, digits: int = 1, unit: str = "") -> str:
    if not stat:
        return "–"
    med = f"{stat['median']:.{digits}f}{unit}"
    if stat.get("n", 1) > 1 and stat["max"] > stat["min"]:
        return f"{med} ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"
    return med


def render_table(doc: dict[str, Any], before: dict[str, Any] | None = None, backfill: dict[str, Any] | None = None,
                 present: Collection[str] = ()) -> str:
    """The Markdown the README's performance section includes: issue 18's targets beside their figures, what
    was run and on what, the figures, the peers, and the profiles (``present``: those of its files that exist)."""
    from tfp_dev.bench_targets import (
        TIME_MEMORY_CHART,
        render_peers,
        render_profile,
        render_runs,
        render_targets,
    )

    results = doc["results"]
    m = doc["machine"]
    lines = [
        "# tfp nightly benchmark",
        "",
        f"Produced by `{doc['command']}` on {doc['created'][:10]}: {m['cpus']} CPUs, "
        f"{m['memory_gb']:.0f} GB, {m['platform']}, Python {m['python']}. SQLite warehouse, directory "
        "transports, age encryption on, one `tfp run` per night with a fresh warehouse and Airflow home. "
        "Each figure is the median of the repeats, with (min–max) when they differ."
        + (f" Borough shape `{doc['shape']['name']}`: {doc['shape']['description']}." if doc.get("shape") else "")
        + (" Load average (1 min) {:.1f} at the start, {:.1f} at the end.".format(
            m["load_average_at_start"][0], m["load_average_at_end"][0]) if m.get("load_average_at_end") else ""),
        "",
        *render_targets(doc, backfill),
        "",
        "## Figures",
        "",
        *render_runs(doc),
        "",
        "| families | input rows | repeats | end-to-end s | rows/s | peak RSS MB | link ÷ Splink | F1 tfp | F1 Splink "
        "| validate ÷ pandas | GX ÷ pandas | same quarantine |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        s = r["summary"]
        same = {True: "yes", False: "NO", None: "–"}[s.get("same_quarantine")]
        lines.append(
            f"| {r['families']:,} | {r['input_rows']:,} | {s['repeats']} | {_fmt(s['wall_s'])} | "
            f"{_fmt(s['rows_per_s'], 0)} | {_fmt(s['peak_rss_mb'], 0)} | {_fmt(s['link_vs_splink'], 2)} | "
            f"{_fmt(s['f1_tfp'], 4)} | {_fmt(s['f1_splink'], 4)} | {_fmt(s['validate_vs_pandas'], 1)} | "
            f"{_fmt(s['gx_vs_pandas'], 1)} | {same} |")
    lines += ["", "Seconds per stage (sum of the stage's task instances):", "",
              "| families | " + " | ".join(STAGES) + " |",
              "|---:|" + "---:|" * len(STAGES)]
    for r in results:
        st = r["summary"]["stages_s"]
        lines.append(f"| {r['families']:,} | " + " | ".join(_fmt(st.get(s)) for s in STAGES) + " |")
    grow = doc.get("scaling") or {}
    if grow:
        lines += ["", "Growth of the end-to-end time: " + ", ".join(
            f"{k.replace('->', ' → ')} families ×{v:.2f}" for k, v in grow.items()) + "."]
    if before:
        lines += ["", "## Before and after optimising", "",
                  f"Before: `{before.get('command', '?')}` on {before.get('created', '?')[:10]}.", "",
                  "| families | end-to-end s before | after | " + " | ".join(f"{s} before/after" for s in
                                                                         ("validate", "stage", "link", "consent",
                                                                          "criteria", "package")) + " |",
                  "|---:|---:|---:|" + "---:|" * 6]
        earlier = {r["families"]: r["summary"] for r in before.get("results", [])}
        for r in results:
            b = earlier.get(r["families"])
            if not b:
                continue
            a = r["summary"]
            cells = [f"{_med(b['stages_s'].get(s))} / {_med(a['stages_s'].get(s))}"
                     for s in ("validate", "stage", "link", "consent", "criteria", "package")]
            lines.append(f"| {r['families']:,} | {_med(b['wall_s'])} | {_med(a['wall_s'])} | " + " | ".join(cells) + " |")
    if doc.get("validation_memory"):
        lines += ["", "Memory of the validate stage on one large file (a schools attendance file of generated rows, "
                  "`validation_memory`): " + _validation_memory_line(doc["validation_memory"])]
    notes = doc.get("notes") or []
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    lines += ["", *render_peers(doc), "", *render_profile(present), "", "## Charts", "",
              f"![time and peak memory by families]({TIME_MEMORY_CHART})", "",
              "![time per stage against size](time_per_stage.png)", ""]
    return "\n".join(lines)


def _med(stat: dict[str, Any] | None) -> str:
    return f"{stat['median']:.1f}" if stat else "–"


def render_chart(doc: dict[str, Any], path: Path) -> Path:
    """Seconds per stage against families, medians with min–max error bars (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = doc["results"]
    sizes = [r["families"] for r in results]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    series = [("end-to-end", [r["summary"].get("wall_s") for r in results])]
    series += [(s, [r["summary"]["stages_s"].get(s) for r in results]) for s in STAGES]
    for name, stats in series:
        points = [(n, st) for n, st in zip(sizes, stats, strict=True) if st]
        if not points or max(st["median"] for _, st in points) < 0.05:
            continue
        xs = [n for n, _ in points]
        ys = [st["median"] for _, st in points]
        err = [[st["median"] - st["min"] for _, st in points], [st["max"] - st["median"] for _, st in points]]
        style = {"linewidth": 2.5, "color": "black"} if name == "end-to-end" else {"linewidth": 1.2}
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("families in the borough")
    ax.set_ylabel("seconds (median, bars: min–max)")
    ax.set_title("tfp nightly run: time per stage against borough size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Running a night


class PeakRss:
    """Polls the resident memory of a process and all its descendants; keeps the peak of the sum.

    ``pid`` may be several processes (an Airflow stack's components): the sum is over all their trees.
    With ``pss`` it also keeps ``peak_pss``, the peak of the summed proportional set sizes: processes forked
    from one parent share its pages, which the RSS sum counts once per process (reading smaps costs more).
    """

    def __init__(self, pid: int | Sequence[int], interval: float = 0.1, pss: bool = False) -> None:
        self.pids = [pid] if isinstance(pid, int) else list(pid)
        self.pid, self.interval, self.peak = self.pids[0], interval, 0
        self.pss, self.peak_pss = pss, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psutil

        roots = []
        for pid in self.pids:
            try:
                roots.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        while roots and not self._stop.is_set():
            total = total_pss = 0
            procs = []
            for root in list(roots):
                try:
                    procs += [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    roots.remove(root)
            if not roots:
                break
            for p in procs:
                try:
                    if self.pss:
                        info = p.memory_full_info()
                        total += info.rss
                        total_pss += info.pss
                    else:
                        total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak = max(self.peak, total)
            self.peak_pss = max(self.peak_pss, total_pss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def new_keys() -> dict[str, str]:
    """Fresh keys for one benchmark, as the environment variables the config names."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    signing = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return {"TFP_PSEUDONYM_KEY": secrets.token_hex(32), "TFP_LINKAGE_KEY": secrets.token_hex(32),
            "TFP_SIGNING_KEY": base64.b64encode(signing).decode()}


def source_settings(feeds: Path, shape: Shape) -> dict[str, Any]:
    """The config's ``sources``: a folder per source, or a ``partners:`` list of folders for a split one."""
    out: dict[str, Any] = {}
    for source in shape.sources:
        ids = shape.partners.get(source)
        out[source] = ({"partners": [{"id": p, "transport": "directory", "path": str(feeds / source / p)}
                                     for p in ids]} if ids else {"transport": "directory", "path": str(feeds / source)})
    return out


def write_config(run_dir: Path, feeds: Path, recipient: str, shape: Shape = SHAPES["six"]) -> Path:
    """A config reading the generated feeds from folders and delivering age-encrypted files to a folder."""
    import yaml

    from tfp.config import example_settings

    config = example_settings(
        local_authority={"code": LA, "name": "Benchmark Borough"},
        warehouse_url="sqlite:///work/warehouse.db",
        work_dir="work",
        sources=source_settings(feeds, shape),
        delivery={"transport": "directory", "path": "delivered", "encryption": "age", "recipient": recipient},
        inbound={"keep_local_files": True},  # every repeat reads the same generated feeds into a fresh warehouse
    )
    path = run_dir / "tfp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TFP_"))}
    env.update(extra)
    env.setdefault("GX_ANALYTICS_ENABLED", "False")
    return env


def generate_feeds(work: Path, families: int, seed: int,
                   shape: Shape = SHAPES["six"]) -> tuple[Path, float | None]:
    """The borough's feeds through ``tfp generate``, kept between benchmarks (same arguments, same bytes)."""
    feeds = work / (f"feeds-{families}-{seed}" if shape.name == "six" else f"feeds-{shape.name}-{families}-{seed}")
    done = feeds / ".complete"
    if done.exists():
        return feeds, None
    if feeds.exists():
        shutil.rmtree(feeds)
    start = time.perf_counter()
    subprocess.run([TFP, "generate", "--out", str(feeds), "--families", str(families), "--seed", str(seed),
                    "--date", REFERENCE_DATE.isoformat(), *generate_options(shape)], check=True, stdout=subprocess.DEVNULL,
                   env=_clean_env({}))
    seconds = time.perf_counter() - start
    done.write_text(f"{seconds:.3f}\n")
    return feeds, seconds


def generate_options(shape: Shape) -> list[str]:
    """``tfp generate``'s options for a shape."""
    return [*(["--health"] if shape.health else []), *(["--support-services"] if shape.support else []),
            *(a for s, ids in shape.partners.items() for a in ("--partners", f"{s}={','.join(ids)}"))]


def migrated_airflow_home(work: Path) -> Path:
    """An Airflow home whose metadata database is migrated once: each run starts from a copy of it,
    so the nightly time does not include a one-off installation step."""
    home = work / "airflow-template"
    if not (home / ".tfp-migrated").exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", "from pathlib import Path; from tfp_airflow.runner import prepare_airflow; "
                        f"prepare_airflow(Path({str(home)!r}))"],
                       check=True, env=_clean_env({"AIRFLOW_HOME": str(home)}), stdout=subprocess.DEVNULL)
    return home


def read_task_instances(airflow_db: Path) -> list[tuple[str, float | None, str, str | None, str | None]]:
    """(task_id, duration, state, start, end) of every task instance of the run."""
    con = sqlite3.connect(f"file:{airflow_db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT task_id, duration, state, start_date, end_date FROM task_instance "
                           "WHERE dag_id = 'tfp_nightly' ORDER BY start_date").fetchall()
    finally:
        con.close()


def _seconds_between(first: str, last: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace(" ", "T"))

    return (parse(last) - parse(first)).total_seconds()


def run_night(feeds: Path, run_dir: Path, template: Path, wrap: Sequence[str] = (),
              shape: Shape = SHAPES["six"]) -> dict[str, Any]:
    """One ``tfp run`` of the nightly DAG on a fresh warehouse; times, memory and counts. ``wrap`` is a
    command to run it under (a profiler)."""
    import pyrage

    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "airflow").mkdir(parents=True)
    for name in ("airflow.db", ".tfp-migrated"):
        shutil.copy2(template / name, run_dir / "airflow" / name)
    identity = pyrage.x25519.Identity.generate()
    config = write_config(run_dir, feeds, str(identity.to_public()), shape)
    (run_dir / "age.key").write_text(str(identity) + "\n")
    (run_dir / "age.key").chmod(0o600)
    env = _clean_env({**new_keys(), "AIRFLOW_HOME": str(run_dir / "airflow")})
    with (run_dir / "tfp-run.log").open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([*wrap, TFP, "run", "--config", str(config), "--date", REFERENCE_DATE.isoformat()],
                                cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        with PeakRss(proc.pid) as rss:
            returncode = proc.wait()
        wall = time.perf_counter() - start
    tis = read_task_instances(run_dir / "airflow" / "airflow.db")
    report_path = run_dir / "work" / "reports" / REFERENCE_DATE.isoformat() / "run_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    succeeded = returncode == 0 and bool(tis) and all(t[2] == "success" for t in tis)
    starts = [t[3] for t in tis if t[3]]
    ends = [t[4] for t in tis if t[4]]
    rows = int(report.get("rows_read", 0))
    return {
        "succeeded": succeeded,
        "returncode": returncode,
        "wall_s": wall,
        "night_s": _seconds_between(min(starts), max(ends)) if starts and ends else None,
        "peak_rss_mb": rss.peak / 2**20,
        "input_rows": rows,
        "rows_per_s": rows / wall if wall else None,
        "stages_s": stage_times((t[0], t[1]) for t in tis),
        "tasks_failed": sorted(t[0] for t in tis if t[2] != "success"),
        "counts": {k: report.get(k) for k in ("rows_read", "rows_staged", "rows_quarantined", "records_linked",
                                              "records_unlinked", "families_assessed", "families_eligible",
                                              "persons_submitted")},
        # the exact count behind the published (rounded) one, for the pandas night's check of equal meaning
        "families_eligible_exact": (report.get("families_exact") or {}).get("families_eligible"),
    }


# ---------------------------------------------------------------------------------------------
# Peer 1: Splink used directly, plain configuration, trained on the night's data


def linked_inputs(run_dir: Path) -> tuple[Any, Any, dict[str, str | None]]:
    """The roster and the partner records the night's ``link`` stage saw, keyed ``dataset|record_id``,
    and what the pipeline linked each one to."""
    import pandas as pd
    from sqlalchemy import create_engine, text

    from tfp.current import current_rows
    from tfp.feeds import PARTNER_DATASETS

    engine = create_engine(f"sqlite:///{run_dir / 'work' / 'warehouse.db'}")
    with engine.connect() as conn:
        roster = current_rows(conn, "families", REFERENCE_DATE)
        parts = []
        for dataset in PARTNER_DATASETS:
            frame = current_rows(conn, dataset, REFERENCE_DATE)
            frame = frame[["record_id", "forename", "surname", "date_of_birth", "sex", "postcode"]].copy()
            frame["record_id"] = dataset + "|" + frame["record_id"].astype(str)
            parts.append(frame)
        links = conn.execute(text("SELECT dataset, record_id, person_ref FROM links WHERE reference_date = :r"),
                             {"r": REFERENCE_DATE}).all()
    engine.dispose()
    records = pd.concat(parts, ignore_index=True)
    return roster, records, {f"{d}|{r}": p for d, r, p in links}


def identifiable(roster: Any) -> set[str]:
    """The roster persons a record can be linked to: not those of whom only the references are stored
    (anyone who has ever withdrawn consent, contract section 10), whom no linker may find."""
    from tfp.retention import ROSTER_SCRUBBED

    kept = roster[list(ROSTER_SCRUBBED)].notna().any(axis=1)
    return set(roster.loc[kept, "person_ref"].astype(str))


def true_pairs(feeds: Path, roster_refs: set[str]) -> dict[str, str]:
    """``dataset|record_id`` -> true person, for valid records whose true person is on the roster."""
    import pandas as pd

    truth = pd.read_csv(feeds / "truth" / "records.csv", dtype=str, keep_default_na=False)
    truth = truth[(truth["valid"] == "Y") & truth["person_ref"].isin(roster_refs)]
    return dict(zip(truth["dataset"] + "|" + truth["record_id"], truth["person_ref"], strict=True))


def _splink_frame(frame: Any, id_column: str) -> Any:
    import pandas as pd

    def text(column: str) -> Any:
        s = frame[column].astype("object")
        return s.where(s.notna() & (s.astype(str).str.strip() != ""), None)

    dob = pd.to_datetime(frame["date_of_birth"], errors="coerce")
    return pd.DataFrame({
        "unique_id": frame[id_column].astype(str),
        "forename": text("forename").str.upper(),
        "surname": text("surname").str.upper(),
        "dob": dob.dt.strftime("%Y-%m-%d").where(dob.notna(), None),
        "postcode": text("postcode").str.upper(),
        "sex": text("sex"),
    })


def splink_direct(roster: Any, records: Any, threshold: float = 0.95) -> dict[str, str | None]:
    """Splink as its documentation shows it, on the same records: standard comparisons, u by random
    sampling, EM on the night's data, predict at ``threshold``, each record's best match."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    from tfp.link import quiet_splink
    from tfp_dev.linkage_eval import best_candidates

    quiet_splink()
    settings = SettingsCreator(
        link_type="link_only",
        comparisons=[
            cl.NameComparison("forename"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.PostcodeComparison("postcode"),
            cl.ExactMatch("sex"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("forename", "surname"),
            block_on("dob"),
            block_on("postcode", "surname"),
        ],
        retain_matching_columns=False,
    )
    db_api = DuckDBAPI(":memory:")
    try:
        db_api.duckdb_con.execute("SET enable_progress_bar = false")
        left = db_api.register(_splink_frame(roster, "person_ref"), table_name="roster")
        right = db_api.register(_splink_frame(records, "record_id"), table_name="records")
        linker = Linker([left, right], settings, log_level=None)
        linker.training.estimate_probability_two_random_records_match(
            [block_on("forename", "surname", "dob")], recall=0.7)
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("forename", "surname"))
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
        predictions = linker.inference.predict(threshold_match_probability=threshold)
        best = best_candidates(db_api.duckdb_con, predictions.physical_name)
    finally:
        db_api.duckdb_con.close()
    return dict(zip(best["record_id"], best["person_ref"], strict=True))


def splink_peer(run_dir: Path, feeds: Path, link_stage_s: float) -> dict[str, Any]:
    import logging

    logging.getLogger("splink").setLevel(logging.ERROR)
    roster, records, tfp_links = linked_inputs(run_dir)
    on_roster = identifiable(roster)
    truth = true_pairs(feeds, on_roster)
    truth = {r: p for r, p in truth.items() if r in tfp_links}
    start = time.perf_counter()
    direct = splink_direct(roster, records)
    seconds = time.perf_counter() - start
    mine, theirs = f1_score(tfp_links, truth), f1_score(direct, truth)
    return {"seconds": seconds, "link_stage_s": link_stage_s, "ratio": link_stage_s / seconds if seconds else None,
            "records": len(records), "roster": len(roster), "roster_scrubbed": len(roster) - len(on_roster),
            "f1_tfp": mine["f1"], "f1_splink": theirs["f1"],
            "tfp": mine, "splink": theirs}


# ---------------------------------------------------------------------------------------------
# Peer 2: the same row-level rules as plain vectorised pandas


def pandas_bad_rows(frame: Any, dataset: str, file_date: date) -> Any:
    """The rows (``_row`` numbers) that break a row-level rule of contract section 3, vectorised."""
    import pandas as pd

    from tfp import feeds, identifiers
    from tfp.validate import DATE_SHAPE, DATETIME_TAIL, DECIMAL, INTEGER, ROW, TERM_FORMAT

    d = feeds.DATASETS[dataset]
    v = {c: frame[c].astype("str").str.strip() for c in d.columns}

    def distinct(s: pd.Series, fn: Any) -> pd.Series:
        codes, uniques = pd.factorize(s)
        return pd.Series([fn(u) for u in uniques], dtype=object).take(codes).set_axis(s.index)

    if "postcode" in v:
        v["postcode"] = distinct(v["postcode"], identifiers.normalise_postcode).astype("str")
    if "nino" in v:
        v["nino"] = distinct(v["nino"], identifiers.normalise_nino).astype("str")
    if "upn" in v:
        v["upn"] = v["upn"].str.upper()
    if "nhs_number" in v:
        v["nhs_number"] = distinct(v["nhs_number"], identifiers.normalise_nhs_number).astype("str")
    if "sex" in v:
        v["sex"] = v["sex"].where(v["sex"] != "", "U")
    bad = pd.Series(False, index=frame.index)
    for column in d.required:
        bad |= v[column] == ""
    day = int(f"{file_date:%Y%m%d}")
    for column in (*d.dates, *d.datetimes):
        s = v[column]
        present = s != ""
        head = s.str.slice(0, 10)
        parsed = pd.to_datetime(head.where(head.str.match(DATE_SHAPE)), format="%Y-%m-%d", errors="coerce")
        ok = parsed.notna()
        if column in d.datetimes:
            ok &= s.str.slice(10).str.match(DATETIME_TAIL)
            ok &= pd.to_datetime(s.where(ok), format="ISO8601", errors="coerce").notna()
        bad |= present & ~ok
        number = parsed.dt.year * 10000 + parsed.dt.month * 100 + parsed.dt.day
        if column == "date_of_birth":
            bad |= ok & (number < 19000101)
        if column in d.not_after_file_date:
            bad |= ok & (number > day)
    for column, codes in d.codes.items():
        bad |= (v[column] != "") & ~v[column].isin(codes)
    regex = {"nino": identifiers.NINO.pattern, "postcode": identifiers.POSTCODE.pattern, "term": TERM_FORMAT}
    regex.update(dict.fromkeys(d.integers, INTEGER))
    regex.update(dict.fromkeys(d.decimals, DECIMAL))
    for column, pattern in regex.items():
        if column in v:
            bad |= (v[column] != "") & ~v[column].str.match(pattern)
    if "upn" in v:
        bad |= (v["upn"] != "") & ~distinct(v["upn"], identifiers.is_valid_upn).astype(bool)
    if "nhs_number" in v:
        bad |= (v["nhs_number"] != "") & ~distinct(v["nhs_number"], identifiers.is_valid_nhs_number).astype(bool)
    if {"sessions_missed", "sessions_possible"} <= set(v):
        possible = pd.to_numeric(v["sessions_possible"].where(v["sessions_possible"].str.match(INTEGER)),
                                 errors="coerce")
        missed = pd.to_numeric(v["sessions_missed"].where(v["sessions_missed"].str.match(INTEGER)),
                               errors="coerce")
        bad |= possible.notna() & missed.notna() & (missed > possible)
    ids = v["record_id"]
    bad |= (ids != "") & ids.duplicated(keep=False)
    return frame.loc[bad, ROW]


def feed_files(feeds: Path) -> list[tuple[str, str, str, date, Path]]:
    """(source, partner, dataset, file date, path) of every generated feed file: ``<source>/<name>`` is the
    source's own partner (the short form), ``<source>/<partner>/<name>`` a partner of a split source."""
    from tfp.feeds import parse_file_name

    out = []
    for source in ALL_SOURCES:
        folder = feeds / source
        if not folder.is_dir():
            continue
        found = [(source, p) for p in sorted(folder.glob("*.csv"))]
        found += [(sub.name, p) for sub in sorted(folder.iterdir()) if sub.is_dir() for p in sorted(sub.glob("*.csv"))]
        for partner, path in found:
            dataset, file_date = parse_file_name(path.name, source)
            out.append((source, partner, dataset, file_date, path))
    return out


def quarantined_rows(run_dir: Path) -> set[tuple[str, str, int]]:
    """(partner, file name, row number) of every row the night quarantined."""
    con = sqlite3.connect(f"file:{run_dir / 'work' / 'warehouse.db'}?mode=ro", uri=True)
    try:
        return set(con.execute("SELECT l.partner, l.file_name, q.row_number FROM quarantine q "
                               "JOIN landing_log l ON l.id = q.landing_id").fetchall())
    finally:
        con.close()


def pandas_peer(run_dir: Path, feeds: Path, validate_stage_s: float) -> dict[str, Any]:
    """Vectorised pandas against the validate stages and against GX in this process, on the same files."""
    from tfp.validate import read_feed, validate_feed

    files = [(partner, dataset, day, path.name, path.read_bytes())
             for _, partner, dataset, day, path in feed_files(feeds)]
    start = time.perf_counter()
    mine: set[tuple[str, str, int]] = set()
    for partner, dataset, day, name, data in files:
        frame = read_feed(data, name, dataset)
        mine |= {(partner, name, int(r)) for r in pandas_bad_rows(frame, dataset, day)}
    pandas_s = time.perf_counter() - start

    _, dataset, day, name, data = files[0]
    validate_feed(read_feed(data, name, dataset).head(5), dataset, day, name,
                  1.0)  # warm: GX's import and context are per process, like a task's
    start = time.perf_counter()
    gx: set[tuple[str, str, int]] = set()
    for partner, dataset, day, name, data in files:
        result = validate_feed(read_feed(data, name, dataset), dataset, day, name, 1.0)
        gx |= {(partner, name, int(r)) for r in result.quarantined["_row"]}
    gx_s = time.perf_counter() - start
    night = quarantined_rows(run_dir)
    return {"pandas_s": pandas_s, "gx_s": gx_s, "validate_stage_s": validate_stage_s,
            "stage_ratio": validate_stage_s / pandas_s if pandas_s else None,
            "gx_ratio": gx_s / pandas_s if pandas_s else None,
            "rows_quarantined": len(night), "pandas_rows": len(mine),
            "same_quarantine": mine == night == gx}


# ---------------------------------------------------------------------------------------------
# Validation memory: one large file through the validate stage, in a process of its own

VALIDATION_MEMORY_MB = 200  # about the size of the file a security review saw take 12x its size

_LAND = """
import sys
from datetime import date
from tfp.config import load_config
from tfp.extract import land_source
from tfp.warehouse import connect, upgrade
config = load_config(sys.argv[1])
upgrade(config.warehouse_url)  # a fresh warehouse: what `tfp db upgrade` does
land_source(connect(config.warehouse_url), config, "schools", date.fromisoformat(sys.argv[2]))
"""

_VALIDATE = """
import json, sys, time
from datetime import date
from tfp import feeds
from tfp.config import load_config
from tfp.validate import validate_source
from tfp.validate import read_feed, validate_feed
from tfp.warehouse import connect
config = load_config(sys.argv[1])
engine = connect(config.warehouse_url)
header = (",".join(feeds.DATASETS["attendance"].columns) + "\\n").encode()
validate_feed(read_feed(header, "warm.csv", "attendance"), "attendance", date(2025, 1, 1), "warm.csv", 1.0)
def high_water():
    # VmHWM: this process's own peak. ru_maxrss is not: Linux carries the parent's peak across fork and exec
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
baseline = high_water()
start = time.perf_counter()
counts = validate_source(engine, config, "schools", date.fromisoformat(sys.argv[2]))
seconds = time.perf_counter() - start
peak = high_water()
print(json.dumps({"baseline_rss_bytes": baseline, "peak_rss_bytes": peak, "seconds": seconds, "counts": counts}))
"""


def big_attendance_file(work: Path, megabytes: int, seed: int = SEED) -> Path:
    """A schools attendance file of about ``megabytes`` MB, kept between runs: a generated borough's
    attendance rows repeated under fresh record_ids."""
    import csv
    import io

    small, _ = generate_feeds(work, 2000, seed)
    (source,) = (small / "schools").glob("attendance_*.csv")
    path = work / f"attendance-{megabytes}mb-{seed}" / source.name
    if path.exists():
        return path
    with source.open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    target, written, copy = megabytes * 10**6, 0, 0
    with part.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out, lineterminator="\r\n").writerow(header)
        while written < target:
            copy += 1
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\r\n").writerows([f"{r[0]}-{copy}", *r[1:]] for r in rows)
            written += out.write(buffer.getvalue())
    part.rename(path)
    return path


def validation_memory(work: Path, megabytes: int = VALIDATION_MEMORY_MB, seed: int = SEED) -> dict[str, Any]:
    """Peak resident memory of the validate stage on one file of about ``megabytes`` MB, against its size.

    The file is landed by one process and validated by another that has first warmed up (GX imported,
    its context and the suite loaded, as in a worker that has validated before): that process's peak
    resident memory (``VmHWM``) before and after ``validate_source`` gives what validating the file took.
    """
    import pyrage

    path = big_attendance_file(work, megabytes, seed)
    run_dir = work / f"validation-memory-{megabytes}mb"
    shutil.rmtree(run_dir, ignore_errors=True)
    feeds = run_dir / "feeds"
    for source in SOURCES:
        (feeds / source).mkdir(parents=True)
    shutil.copyfile(path, feeds / "schools" / path.name)  # landing removes the plaintext it lands
    config = write_config(run_dir, feeds, str(pyrage.x25519.Identity.generate().to_public()))
    env = _clean_env(new_keys())
    day = REFERENCE_DATE.isoformat()
    subprocess.run([sys.executable, "-c", _LAND, str(config), day], cwd=run_dir, env=env, check=True)
    done = subprocess.run([sys.executable, "-c", _VALIDATE, str(config), day], cwd=run_dir, env=env, check=True,
                          capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(run_dir, ignore_errors=True)
    size = path.stat().st_size
    grew = figures["peak_rss_bytes"] - figures["baseline_rss_bytes"]
    return {"file_bytes": size, "file_mb": size / 10**6, "baseline_rss_mb": figures["baseline_rss_bytes"] / 10**6,
            "peak_rss_mb": figures["peak_rss_bytes"] / 10**6, "validation_mb": grew / 10**6,
            "ratio": grew / size, "seconds": figures["seconds"], "rows_read": figures["counts"]["rows_read"],
            "rows_quarantined": figures["counts"]["rows_quarantined"]}


# ---------------------------------------------------------------------------------------------
# The benchmark


def machine() -> dict[str, Any]:
    import psutil

    return {"cpus": os.cpu_count(), "memory_gb": psutil.virtual_memory().total / 2**30,
            "platform": platform.platform(terse=True), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "load_average_at_start": list(os.getloadavg())}


def benchmark(sizes: Sequence[int], repeats: int, out: Path, work: Path, seed: int = SEED,
              peers: bool = True, command: str = "python -m tfp_dev.bench", say=print,
              notes: Sequence[str] = (), memory: bool = True, shape: Shape = SHAPES[DEFAULT_SHAPE],
              fresh: bool = False) -> dict[str, Any]:
    """Run every size ``repeats`` times and write results.json, results.md and the charts; the sizes of an
    earlier comparable results.json in ``out`` that this invocation does not measure are kept (unless ``fresh``)."""
    from tfp_dev.bench_night import night_peer

    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    previous_path = out / "results.json"
    previous = None if fresh or not previous_path.exists() else json.loads(previous_path.read_text(encoding="utf-8"))
    template = migrated_airflow_home(work)
    doc: dict[str, Any] = {"schema": SCHEMA_VERSION, "command": command,
                           "created": datetime.now(UTC).isoformat(timespec="seconds"),
                           "machine": machine(), "reference_date": REFERENCE_DATE.isoformat(), "seed": seed,
                           "sizes": list(sizes), "repeats_requested": repeats, "results": [],
                           "shape": {"name": shape.name, "sources": list(shape.sources),
                                     "partners": {s: list(ids) for s, ids in shape.partners.items()},
                                     "description": shape.describe()},
                           "notes": list(notes)}
    doc = carry_over(previous, doc)
    for families in sizes:
        feeds, gen_s = generate_feeds(work, families, seed, shape)
        say(f"{families} families: feeds ready" + (f" (generated in {gen_s:.0f} s)" if gen_s else " (cached)"))
        runs = []
        for i in range(repeats):
            run_dir = work / f"run-{shape.name}-{families}-{i + 1}"
            run = run_night(feeds, run_dir, template, shape=shape)
            if run["succeeded"] and peers:
                run["splink"] = splink_peer(run_dir, feeds, run["stages_s"]["link"])
                run["pandas"] = pandas_peer(run_dir, feeds, run["stages_s"]["validate"])
                run["night"] = night_peer(feeds, run_dir, run["wall_s"], run.get("families_eligible_exact"),
                                          run["counts"])
            runs.append(run)
            say(f"  run {i + 1}/{repeats}: {'ok' if run['succeeded'] else 'FAILED'} in {run['wall_s']:.1f} s, "
                f"peak {run['peak_rss_mb']:.0f} MB"
                + (f", link/Splink {run['splink']['ratio']:.2f}, validate/pandas {run['pandas']['stage_ratio']:.1f}"
                   if "splink" in run else "")
                + (f", tfp/pandas night {run['night']['ratio']:.1f} (eligible {run['night']['eligible_tfp']} / "
                   f"{run['night']['eligible_pandas']})" if (run.get("night") or {}).get("succeeded") else ""))
            if run["succeeded"]:
                shutil.rmtree(run_dir / "work" / "landing", ignore_errors=True)  # keep the disk in check
        result = {"families": families, "input_rows": max((r["input_rows"] for r in runs), default=0),
                  "generate_s": gen_s, "runs": runs, "summary": summarise(runs), "command": command,
                  "created": datetime.now(UTC).isoformat(timespec="seconds"), "load_average_at_end": list(os.getloadavg())}
        doc["results"] = sorted([*(r for r in doc["results"] if r["families"] != families), result],
                                key=lambda r: r["families"])
        doc["scaling"] = scaling(doc["results"])
        write_outputs(doc, out)  # after every size, so a long benchmark leaves what it has done
    if memory:
        doc["validation_memory"] = {"command": command, "created": datetime.now(UTC).isoformat(timespec="seconds"),
                                    **validation_memory(work, seed=seed)}
        say(_validation_memory_line(doc["validation_memory"]))
    doc["machine"]["load_average_at_end"] = list(os.getloadavg())
    write_outputs(doc, out)
    return doc


def _validation_memory_line(m: dict[str, Any]) -> str:
    return (f"Validating one {m['file_mb']:.0f} MB file ({m['rows_read']:,} rows) took {m['validation_mb']:.0f} MB "
            f"of memory beyond the warmed-up process ({m['baseline_rss_mb']:.0f} MB), {m['ratio']:.1f}× the file, "
            f"in {m['seconds']:.0f} s (peak resident {m['peak_rss_mb']:.0f} MB).")


def write_outputs(doc: dict[str, Any], out: Path) -> list[Path]:
    """results.json, results.md (with ``before.json`` and ``backfill.json`` from ``out`` when present) and the
    two charts."""
    from tfp_dev.bench_targets import (
        BACKFILL,
        TIME_MEMORY_CHART,
        present_files,
        read_backfill,
        render_time_memory_chart,
    )

    before_path = out / "before.json"
    before = json.loads(before_path.read_text()) if before_path.exists() else None
    results = out / "results.json"
    results.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    table = out / "results.md"
    table.write_text(render_table(doc, before, read_backfill(out / BACKFILL), present_files(out)), encoding="utf-8")
    chart = render_chart(doc, out / "time_per_stage.png")
    both = render_time_memory_chart(doc, out / TIME_MEMORY_CHART)
    return [results, table, chart, both]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfp_dev.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 50000], help="families per borough")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench", help="where the three artefacts go")
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench", help="feeds and runs (large)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--shape", choices=sorted(SHAPES), default=DEFAULT_SHAPE,
                        help="issue17 (default): health and support_services sources, housing split among three "
                             "partners and probation among two; six: the six sources, one partner each")
    parser.add_argument("--no-peers", action="store_true",
                        help="skip the peers (Splink, the pandas rules, the one-process pandas night)")
    parser.add_argument("--fresh", action="store_true",
                        help="start results.json afresh instead of keeping the earlier sizes this run does not measure")
    parser.add_argument("--note", action="append", default=[], help="a line for the table (e.g. what else ran)")
    parser.add_argument("--no-validation-memory", action="store_true",
                        help=f"skip validating one {VALIDATION_MEMORY_MB} MB file for its memory")
    parser.add_argument("--validation-memory-only", type=int, metavar="MB", default=None,
                        help="only measure the memory of validating one file of about MB megabytes, and print it")
    args = parser.parse_args(argv)
    if args.validation_memory_only:
        print(_validation_memory_line(validation_memory(args.work.resolve(), args.validation_memory_only, args.seed)))
        return 0
    args.out, args.work = args.out.resolve(), args.work.resolve()  # each night runs in its own folder
    command = "python -m tfp_dev.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = benchmark(args.sizes, args.repeats, args.out, args.work, args.seed, not args.no_peers, command.strip(),
                    notes=args.note, memory=not args.no_validation_memory, shape=SHAPES[args.shape], fresh=args.fresh)
    failed = [r["families"] for r in doc["results"] if r["families"] in args.sizes and r["summary"]["repeats"] < args.repeats]
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}, {args.out / 'time_per_stage.png'}, "
          f"{args.out / 'time_memory_by_families.png'}")
    if failed:
        print(f"some runs failed for sizes {failed}: see their tfp-run.log under {args.work}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
