"""A backfill benchmark (``python -m tfp_dev.bench_backfill``, ``make bench-backfill``): N nights through a real
scheduler, then the same N nights by ``tfp run``, and whether both delivered the same bytes.

It generates one borough's drops for N consecutive reference dates ending at :data:`tfp_dev.bench.REFERENCE_DATE`
(the same seed each night: the same borough, dated on), side by side in one inbound folder. A real Airflow on
loopback (api-server, scheduler with the LocalExecutor, dag-processor; SQLite metadata) runs
``airflow backfill create --max-active-runs 1`` over the N dates; it records the backfill's wall time (from
creating it to the last run's end), each run's duration from the metadata database, the seconds per stage
(sum of task instances) and the peak resident memory of the stack's whole process tree. Then ``tfp run``
runs each date in order against an independent warehouse and outbox with the same feeds, keys and config,
and every delivered file is compared byte for byte with the scheduled one.

Delivery is unencrypted here (a directory outbox): age ciphertext differs on every encryption, so two
independent outboxes could only be compared after decrypting; the cost of age is in ``bench/results.md``.

Writes ``backfill.json`` and ``backfill.md``. Nothing is asserted about time; it exits non-zero when a run
fails or the deliveries differ. Output holds counts, times and file names only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tfp_dev import bench
from tfp_dev.airflow_stack import StackError

DAG_ID = "tfp_nightly"
LONDON = ZoneInfo("Europe/London")
SCHEMA_VERSION = 1
NIGHT_TIMEOUT = 900.0  # seconds a scheduled night may take before the benchmark gives up


class BackfillFailed(RuntimeError):
    """A scheduled run or a ``tfp run`` failed, or the stack gave up: the message names the run and task."""


# ---------------------------------------------------------------------------------------------
# Pure parts


def night_dates(nights: int, last: date = bench.REFERENCE_DATE) -> list[date]:
    """``nights`` consecutive reference dates ending at ``last``."""
    if nights < 1:
        raise ValueError("nights must be at least 1")
    return [last - timedelta(days=nights - 1 - i) for i in range(nights)]


def utc(text: str | None) -> datetime | None:
    """A metadata timestamp (SQLite keeps them as text, sometimes without an offset: UTC) as aware UTC."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace(" ", "T"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def reference_date(logical_date: str) -> date:
    """A run's reference date: its logical date's day in London (the nightly cron is 01:00 London)."""
    when = utc(logical_date)
    assert when is not None
    return when.astimezone(LONDON).date()


def delivered_files(folder: Path) -> dict[str, bytes]:
    """Every file in a delivery folder, by name."""
    if not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def compare_deliveries(scheduled: dict[str, bytes], by_hand: dict[str, bytes],
                       dates: Sequence[date]) -> dict[str, Any]:
    """Byte-for-byte comparison of two deliveries: identical only when both hold the same names with the same
    bytes and every date delivered something. Differing names (only in one, or other bytes) are listed."""
    differing = sorted(n for n in scheduled.keys() | by_hand.keys() if scheduled.get(n) != by_hand.get(n))
    per_night = {d.isoformat(): sum(1 for n in scheduled if f"_{d:%Y%m%d}." in n) for d in dates}
    undelivered = [d for d, count in per_night.items() if count == 0]
    return {"byte_identical": not differing and not undelivered, "differing": differing,
            "files_scheduled": len(scheduled), "files_tfp_run": len(by_hand), "files_per_night": per_night,
            "nights_without_delivery": undelivered}


def summarise(dates: Sequence[date], runs: Sequence[dict[str, Any]], manual: Sequence[dict[str, Any]],
              total_s: float, stages: dict[str, dict[str, float]], peak_rss_mb: float | None,
              comparison: dict[str, Any]) -> dict[str, Any]:
    """The figures of one backfill: spreads per night, the 365-night extrapolation, what was compared."""
    per_night = bench.spread(r["duration_s"] for r in runs)
    by_hand = bench.spread(r["wall_s"] for r in manual)
    nights = len(dates)
    return {
        "nights": nights,
        "first_date": dates[0].isoformat(),
        "last_date": dates[-1].isoformat(),
        "total_s": total_s,
        "per_night_s": per_night,
        "tfp_run_per_night_s": by_hand,
        "stages_s": stages,
        "peak_rss_mb": peak_rss_mb,
        **comparison,
        "extrapolated_365_nights": {
            "extrapolated": True,
            "method": "median scheduled night (dag_run end - start) x 365; not measured",
            "seconds": per_night["median"] * 365 if per_night else None,
            "hours": per_night["median"] * 365 / 3600 if per_night else None,
            "from_total_s": total_s / nights * 365 if nights else None,
            "from_total_method": "backfill total_s / nights x 365 (includes the scheduler's gaps between runs)",
        },
    }


def preload_state(env: dict[str, str]) -> str:
    """Whether the stack's scheduler preloads the tasks' libraries (tfp_airflow.preload): "on" or "off"."""
    from tfp_airflow.preload import OFF, SWITCH

    return "off" if env.get(SWITCH, "").strip().lower() in OFF else "on"


def _fmt(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "–"
    return f"{stat['median']:.1f} ({stat['min']:.1f}–{stat['max']:.1f})"


def render_markdown(doc: dict[str, Any]) -> str:
    """A short table of the backfill, its stages and the command that produced it."""
    s, m = doc["summary"], doc["machine"]
    ext = s["extrapolated_365_nights"]
    pss = (doc.get("backfill") or {}).get("peak_pss_mb")
    ident = "yes" if s["byte_identical"] else f"NO ({len(s['differing'])} differing: {', '.join(s['differing'][:10])})"
    lines = [
        "# tfp backfill benchmark",
        "",
        f"Produced by `{doc['command']}` on {doc['created'][:10]}: {m['cpus']} CPUs, {m['memory_gb']:.0f} GB, "
        f"{m['platform']}, Python {m['python']}; load average (1 min) {m['load_average_at_start'][0]:.1f} at the "
        f"start, {m.get('load_average_at_end', [float('nan')])[0]:.1f} at the end.",
        "",
        f"{s['nights']} nights ({s['first_date']} to {s['last_date']}) of a {doc['families']:,}-family borough, shape "
        f"`{doc['shape']['name']}` ({doc['shape']['description']}). `airflow backfill create --max-active-runs 1` "
        "through a real scheduler (LocalExecutor, SQLite metadata, api-server and dag-processor on loopback), "
        "then `tfp run` for each date in order on an independent warehouse and outbox; unencrypted directory "
        "delivery, compared byte for byte. Seconds; median (min–max) per night.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| backfill wall time (creation → last run finished) | {s['total_s']:.1f} s |",
        f"| scheduled night (dag_run end − start) | {_fmt(s['per_night_s'])} |",
        f"| `tfp run` night (wall) | {_fmt(s['tfp_run_per_night_s'])} |",
        f"| peak RSS of the stack's process tree | {s['peak_rss_mb']:.0f} MB |" if s["peak_rss_mb"] else
        "| peak RSS of the stack's process tree | – |",
        f"| peak PSS of the stack's process tree (shared pages counted once) | {pss:.0f} MB |" if pss else
        "| peak PSS of the stack's process tree (shared pages counted once) | – |",
        f"| delivered files (scheduled / tfp run) | {s['files_scheduled']} / {s['files_tfp_run']} |",
        f"| byte-identical | {ident} |",
        f"| **extrapolated**, not measured: 365 nights at the median scheduled night | "
        f"{ext['seconds'] or 0:.0f} s ({ext['hours'] or 0:.2f} h) |",
        f"| **extrapolated**: 365 × backfill wall time ÷ nights | {ext['from_total_s'] or 0:.0f} s "
        f"({(ext['from_total_s'] or 0) / 3600:.2f} h) |",
        "",
        "Seconds per stage, all nights added up (sum of the stage's task instances):",
        "",
        "| stage | scheduled | tfp run |",
        "|---|---:|---:|",
    ]
    sched, hand = s["stages_s"].get("scheduled", {}), s["stages_s"].get("tfp_run", {})
    for stage in bench.STAGES:
        lines.append(f"| {stage} | {sched.get(stage, 0.0):.1f} | {hand.get(stage, 0.0):.1f} |")
    parallel = (doc.get("backfill") or {}).get("parallelism")
    preload = (doc.get("backfill") or {}).get("preload")
    if parallel:
        lines += ["", f"Under the scheduler up to {parallel} tasks run at once and each task is a process of its own "
                  + ("forked from the scheduler, which imported the tasks' libraries once (tfp_airflow.preload); "
                     if preload == "on" else
                     "(importing its libraries, Great Expectations for validate, every time; preload "
                     f"{preload or 'not available'}); ")
                  + "`tfp run` runs them one after another in one process. So a stage's sum is not its share of "
                  "the wall time."]
    lines += [*([""] + [f"- {n}" for n in doc["notes"]] if doc.get("notes") else []),
              "", f"Command: `{doc['command']}`", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Feeds and configs


def nightly_feeds(work: Path, families: int, seed: int, shape: bench.Shape, dates: Sequence[date]) -> Path:
    """Every night's drops of one borough side by side in ``<feeds>/inbound`` (kept between runs), as a
    partner folder holds them after N nights. The generator's truth stays out."""
    from tfp_dev.generate import generate

    feeds = work / f"feeds-{shape.name}-{families}-{seed}-{dates[0]:%Y%m%d}-{dates[-1]:%Y%m%d}"
    inbound = feeds / "inbound"
    if (feeds / ".complete").exists():
        return inbound
    shutil.rmtree(feeds, ignore_errors=True)
    for day in dates:
        out = feeds / f"gen-{day:%Y%m%d}"
        generate(out, families, seed, on=day, health=shape.health, support=shape.support,
                 partners=dict(shape.partners) or None)
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            rel = path.relative_to(out)
            if rel.parts[0] == "truth":
                continue
            dest = inbound / rel
            if dest.exists() and dest.read_bytes() != path.read_bytes():
                raise RuntimeError(f"two nights wrote {rel} differently")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        shutil.rmtree(out)
    (feeds / ".complete").touch()
    return inbound


def run_config(run_dir: Path, inbound: Path, shape: bench.Shape) -> Path:
    """bench's config for ``run_dir`` reading ``inbound`` (files kept), delivering unencrypted to a folder."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    path = bench.write_config(run_dir, inbound, "", shape)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["delivery"] = {"transport": "directory", "path": "delivered", "encryption": "none"}
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    (run_dir / "delivered").mkdir(exist_ok=True)
    return path


def copy_home(template: Path, home: Path) -> Path:
    """An Airflow home holding a copy of the migrated template's metadata database (no migration here)."""
    home.mkdir(parents=True, exist_ok=True)
    for name in ("airflow.db", ".tfp-migrated"):
        shutil.copy2(template / name, home / name)
    return home


# ---------------------------------------------------------------------------------------------
# The metadata database


def _query(db: Path, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, tuple(args)).fetchall()
    finally:
        con.close()


def dag_runs(db: Path) -> list[dict[str, Any]]:
    """Every tfp_nightly run: id, type, state, reference date, start, end and duration."""
    rows = _query(db, "SELECT run_id, run_type, state, logical_date, start_date, end_date FROM dag_run "
                      "WHERE dag_id = ? ORDER BY logical_date", (DAG_ID,))
    out = []
    for run_id, run_type, state, logical, start, end in rows:
        s, e = utc(start), utc(end)
        out.append({"run_id": run_id, "run_type": run_type, "state": state,
                    "reference_date": reference_date(logical).isoformat(),
                    "start": s.isoformat() if s else None, "end": e.isoformat() if e else None,
                    "duration_s": (e - s).total_seconds() if s and e else None})
    return out


def task_instances(db: Path) -> list[tuple[str, str, float | None, str]]:
    """(run_id, task_id, duration, state) of every tfp_nightly task instance."""
    return _query(db, "SELECT run_id, task_id, duration, state FROM task_instance WHERE dag_id = ?", (DAG_ID,))


# ---------------------------------------------------------------------------------------------
# Running it


def scheduled_backfill(root: Path, config: Path, keys: dict[str, str], template: Path,
                       dates: Sequence[date], say=print) -> dict[str, Any]:
    """The N nights through a real scheduler: times from the metadata database, peak RSS of the stack."""
    from tfp_dev.airflow_stack import airflow_stack

    nights = len(dates)
    with airflow_stack(root, {"TFP_CONFIG": str(config), **keys},
                       prepare_home=lambda home: copy_home(template, home)) as stack:
        db = stack.home / "airflow.db"
        admin = stack.token("admin")
        stack.wait_for_dag(DAG_ID, admin)
        stack.api("PATCH", f"/dags/{DAG_ID}", admin, {"is_paused": False})
        say(f"stack up on port {stack.port}; creating the backfill of {nights} nights")
        with bench.PeakRss([p.pid for p in stack.procs.values()], interval=0.5, pss=True) as rss:
            created_at = datetime.now(UTC)
            started = time.perf_counter()
            stack.airflow("backfill", "create", "--dag-id", DAG_ID, "--max-active-runs", "1",
                          "--from-date", dates[0].isoformat(), "--to-date", f"{dates[-1]}T23:59:59")

            def finished() -> list[dict[str, Any]] | None:
                try:
                    runs = dag_runs(db)
                except sqlite3.OperationalError:  # the scheduler holds a write lock: ask again
                    return None
                failed = [r for r in runs if r["state"] == "failed"]
                if failed:
                    tis = task_instances(db)
                    raise BackfillFailed("; ".join(
                        f"scheduled run of {r['reference_date']} failed: task(s) "
                        + (", ".join(sorted(t for run, t, _, st in tis if run == r["run_id"] and st == "failed"))
                           or "none failed (see the scheduler log)") for r in failed)
                        + f" (logs under {stack.home / 'logs'})")
                done = [r for r in runs if r["state"] == "success"]
                return runs if len(done) >= nights else None

            runs = stack.wait_for(f"{nights} successful {DAG_ID} runs", finished,
                                  timeout=NIGHT_TIMEOUT * nights, every=2)
            observed_s = time.perf_counter() - started
        tis = task_instances(db)
    got = sorted(r["reference_date"] for r in runs)
    if got != [d.isoformat() for d in dates] or {r["run_type"] for r in runs} != {"backfill"}:
        raise BackfillFailed(f"the backfill made runs for {got} ({sorted({r['run_type'] for r in runs})}), "
                             f"not the {nights} asked for")
    last_end = max(utc(r["end"]) for r in runs)
    for r in runs:
        r["stages_s"] = bench.stage_times((t, d) for run, t, d, _ in tis if run == r["run_id"])
    return {"runs": runs, "total_s": (last_end - created_at).total_seconds(), "observed_s": observed_s,
            "stages_s": bench.stage_times((t, d) for _, t, d, _ in tis), "peak_rss_mb": rss.peak / 2**20,
            "peak_pss_mb": rss.peak_pss / 2**20,
            "tasks": len(tis), "executor": stack.env["AIRFLOW__CORE__EXECUTOR"],
            "parallelism": int(stack.env["AIRFLOW__CORE__PARALLELISM"]),
            "preload": preload_state(stack.env)}


def tfp_runs(run_dir: Path, config: Path, keys: dict[str, str], template: Path,
             dates: Sequence[date], say=print) -> dict[str, Any]:
    """``tfp run`` for each date in order, in a home of its own; each night's wall time and peak RSS."""
    home = copy_home(template, run_dir / "airflow")
    env = bench._clean_env({**keys, "AIRFLOW_HOME": str(home)})
    nights = []
    for day in dates:
        log_path = run_dir / f"tfp-run-{day:%Y%m%d}.log"
        with log_path.open("wb") as log:
            start = time.perf_counter()
            proc = subprocess.Popen([bench.TFP, "run", "--config", str(config), "--date", day.isoformat()],
                                    cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
            with bench.PeakRss(proc.pid, interval=0.5) as rss:
                returncode = proc.wait()
            wall = time.perf_counter() - start
        if returncode != 0:
            failed = sorted(t for _, t, _, st in task_instances(home / "airflow.db") if st == "failed")
            raise BackfillFailed(f"tfp run --date {day} failed ({returncode}): task(s) {', '.join(failed) or '?'}"
                                 f" (log {log_path})")
        nights.append({"reference_date": day.isoformat(), "wall_s": wall, "peak_rss_mb": rss.peak / 2**20})
        say(f"  tfp run {day}: {wall:.1f} s")
    tis = task_instances(home / "airflow.db")
    return {"runs": nights, "stages_s": bench.stage_times((t, d) for _, t, d, _ in tis)}


def benchmark(nights: int, families: int, out: Path, work: Path, shape: bench.Shape, seed: int = bench.SEED,
              command: str = "python -m tfp_dev.bench_backfill", say=print,
              notes: Sequence[str] = ()) -> dict[str, Any]:
    """Generate, backfill through the scheduler, run by hand, compare; write backfill.json and .md."""
    dates = night_dates(nights)
    doc: dict[str, Any] = {"schema": SCHEMA_VERSION, "command": command,
                           "created": datetime.now(UTC).isoformat(timespec="seconds"), "machine": bench.machine(),
                           "date": dates[-1].isoformat(), "nights": nights, "families": families, "seed": seed,
                           "shape": {"name": shape.name, "sources": list(shape.sources),
                                     "partners": {s: list(ids) for s, ids in shape.partners.items()},
                                     "description": shape.describe()},
                           "notes": list(notes)}
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    inbound = nightly_feeds(work, families, seed, shape, dates)
    say(f"{nights} nights of {families} families ({shape.name}) ready in {time.perf_counter() - start:.0f} s")
    template = bench.migrated_airflow_home(work)
    run_root = work / f"run-{shape.name}-{families}-{nights}"
    shutil.rmtree(run_root, ignore_errors=True)
    keys = bench.new_keys()
    scheduled_dir, by_hand_dir = run_root / "scheduled", run_root / "by-hand"
    scheduled_config = run_config(scheduled_dir, inbound, shape)
    by_hand_config = run_config(by_hand_dir, inbound, shape)

    backfill = scheduled_backfill(run_root / "stack", scheduled_config, keys, template, dates, say)
    say(f"backfill of {nights} nights: {backfill['total_s']:.1f} s, peak {backfill['peak_rss_mb']:.0f} MB")
    manual = tfp_runs(by_hand_dir, by_hand_config, keys, template, dates, say)
    comparison = compare_deliveries(delivered_files(scheduled_dir / "delivered"),
                                    delivered_files(by_hand_dir / "delivered"), dates)
    doc["summary"] = summarise(dates, backfill["runs"], manual["runs"], backfill["total_s"],
                               {"scheduled": backfill["stages_s"], "tfp_run": manual["stages_s"]},
                               backfill["peak_rss_mb"], comparison)
    doc["backfill"] = {k: backfill[k] for k in ("runs", "observed_s", "tasks", "executor", "parallelism", "preload",
                                                "peak_pss_mb")}
    doc["tfp_run"] = manual["runs"]
    doc["machine"]["load_average_at_end"] = list(os.getloadavg())
    write_outputs(doc, out)
    shutil.rmtree(run_root / "scheduled" / "work" / "landing", ignore_errors=True)  # keep the disk in check
    shutil.rmtree(run_root / "by-hand" / "work" / "landing", ignore_errors=True)
    return doc


def write_outputs(doc: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    data, table = out / "backfill.json", out / "backfill.md"
    data.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    table.write_text(render_markdown(doc), encoding="utf-8")
    return [data, table]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfp_dev.bench_backfill", description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=7, help="consecutive reference dates, ending 2025-03-31")
    parser.add_argument("--families", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=bench.REPO / "bench", help="where backfill.json and .md go")
    parser.add_argument("--work", type=Path, default=bench.REPO / "var" / "bench-backfill",
                        help="feeds, warehouses, the Airflow home (large)")
    parser.add_argument("--shape", choices=sorted(bench.SHAPES), default=bench.DEFAULT_SHAPE)
    parser.add_argument("--seed", type=int, default=bench.SEED)
    parser.add_argument("--note", action="append", default=[], help="a line for the table (e.g. what else ran)")
    args = parser.parse_args(argv)
    command = "python -m tfp_dev.bench_backfill " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        doc = benchmark(args.nights, args.families, args.out.resolve(), args.work.resolve(),
                        bench.SHAPES[args.shape], args.seed, command.strip(), notes=args.note)
    except (BackfillFailed, StackError) as e:
        print(f"bench_backfill: {e}", file=sys.stderr)
        return 1
    s = doc["summary"]
    print(f"wrote {args.out / 'backfill.json'} and {args.out / 'backfill.md'}: {s['nights']} nights in "
          f"{s['total_s']:.1f} s, median night {s['per_night_s']['median']:.1f} s, "
          f"byte-identical {s['byte_identical']}")
    if not s["byte_identical"]:
        print(f"bench_backfill: deliveries differ: {', '.join(s['differing']) or 'a night delivered nothing'}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
