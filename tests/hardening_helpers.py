"""Shared pieces of the hardening suite: land/validate/stage over a warehouse, the landing log's
state, whole `tfp run` subprocesses with a small generated borough, and leak searches."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path

from sqlalchemy import Engine, func, select

from conftest import airflow_home, make_keys
from helpers import write_config
from tfp.feeds import DATASETS
from tfp.warehouse import landing_log, quarantine, staging

R = date(2025, 3, 31)
LA = "E09000031"
TFP = str(Path(sys.executable).with_name("tfp"))


# -- in-process: the first three stages over a warehouse ------------------------------------------

def process(engine: Engine, config, reference_date: date = R, sources: Iterable[str] | None = None
            ) -> dict[str, dict]:
    """Land, validate and stage each source (every source the config names by default); returns the counts of
    each stage per source."""
    from tfp.extract import land_source
    from tfp.stage import stage_source
    from tfp.validate import validate_source

    out = {}
    for source in (config.configured_sources if sources is None else sources):
        landed = land_source(engine, config, source, reference_date)
        validated = validate_source(engine, config, source, reference_date)
        staged = stage_source(engine, config, source, reference_date)
        out[source] = {"extract": landed, "validate": validated, "stage": staged}
    return out


def landings(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(landing_log.c.id, landing_log.c.source, landing_log.c.file_name, landing_log.c.status,
                   landing_log.c.rejection, landing_log.c.rows_read, landing_log.c.rows_staged,
                   landing_log.c.rows_quarantined, landing_log.c.sha256, landing_log.c.duplicate_of)
            .order_by(landing_log.c.id))]


def quarantined(engine: Engine) -> dict[str, str]:
    """record_id -> the rules its row was quarantined with."""
    with engine.connect() as conn:
        rows = conn.execute(select(quarantine.c.row_json, quarantine.c.rules)).all()
    return {json.loads(r.row_json)["record_id"]: r.rules for r in rows}


def staged(engine: Engine, dataset: str) -> list[dict]:
    table = staging[dataset]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.landing_id, table.c.row_number))]


def staged_count(engine: Engine, dataset: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(staging[dataset])).scalar_one()


def assert_counts_add_up(engine: Engine) -> None:
    """Every validated or staged landing: rows_read = rows_staged + rows_quarantined, and the tables agree."""
    for landing in landings(engine):
        if landing["status"] in ("staged", "superseded"):
            assert landing["rows_read"] == landing["rows_staged"] + landing["rows_quarantined"], landing
            table = staging[_dataset_of(engine, landing["id"])]
            with engine.connect() as conn:
                n = conn.execute(select(func.count()).select_from(table)
                                 .where(table.c.landing_id == landing["id"])).scalar_one()
                q = conn.execute(select(func.count()).select_from(quarantine)
                                 .where(quarantine.c.landing_id == landing["id"])).scalar_one()
            assert (n, q) == (landing["rows_staged"], landing["rows_quarantined"]), landing


def _dataset_of(engine: Engine, landing_id: int) -> str:
    with engine.connect() as conn:
        dataset = conn.execute(select(landing_log.c.dataset).where(landing_log.c.id == landing_id)).scalar_one()
    assert dataset in DATASETS
    return dataset


def half_written(*folders: Path) -> list[str]:
    """Temporary files left behind: ``.part-`` copies under landing, outbox or a delivery folder."""
    return sorted(str(p) for folder in folders if folder.exists() for p in folder.rglob("*") if ".part-" in p.name)


# -- whole runs ----------------------------------------------------------------------------------

def make_borough(cache: Path, families: int = 30, seed: int = 8) -> Path:
    """A small synthetic borough's partner feeds, generated once per session into ``cache``."""
    from tfp_dev.generate import generate

    inbound = cache / "inbound"
    if not inbound.exists():
        generate(cache / "gen", families=families, seed=seed, on=R)
        shutil.rmtree(cache / "gen" / "truth")
        (cache / "gen").rename(inbound)
    return inbound


def night_root(root: Path, borough: Path, warehouse_url: str = "sqlite:///work/warehouse.db",
               **overrides) -> Path:
    """A folder with the borough's feeds under inbound/, a config (directory transports, no encryption)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(borough, root / "inbound", dirs_exist_ok=True)
    write_config(root, warehouse_url, **overrides)
    return root / "tfp.yaml"


def run_env(root: Path, keys: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `tfp run` subprocess: the keys, and ``root/airflow`` as its Airflow home,
    a copy of the session's migrated one (unless ``extra`` names another home)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(keys if keys is not None else make_keys())
    home = extra.get("AIRFLOW_HOME") or str(airflow_home(root / "airflow"))
    env.update({"AIRFLOW_HOME": home, "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "GX_ANALYTICS_ENABLED": "False"})
    env.update(extra)
    return env


def tfp_run(config: Path, env: dict[str, str], reference_date: date = R,
            timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([TFP, "run", "--config", str(config), "--date", reference_date.isoformat()],
                          env=env, capture_output=True, text=True, cwd=config.parent, timeout=timeout)


def start_run(config: Path, env: dict[str, str], reference_date: date = R, log: Path | None = None
              ) -> subprocess.Popen:
    """`tfp run` in the background, in its own process group (so a kill takes its children too)."""
    out = open(log or config.parent / f"run-{reference_date}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([TFP, "run", "--config", str(config), "--date", reference_date.isoformat()],
                            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=config.parent,
                            start_new_session=True)


def wait_for(condition: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None,
             every: float = 0.2) -> bool:
    """Poll ``condition`` until true; False when the timeout passes or ``proc`` ends first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if condition():
                return True
        except Exception:  # the warehouse may not exist yet or be locked for a moment
            pass
        if proc is not None and proc.poll() is not None:
            return bool(condition())
        time.sleep(every)
    return False


def files_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.exists() else {}


def leak_pattern(values: set[str]) -> re.Pattern[bytes]:
    """Any of the values as a whole word ("Field" in "RenderedTaskInstanceFields" is not a surname)."""
    alternatives = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    return re.compile(f"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])".encode())


def personal_values(inbound: Path, reference_date: date = R) -> set[str]:
    """Names (5+ letters), postcodes, NINOs, UPNs, dates of birth, person and family refs in the feeds."""
    import csv

    values: set[str] = set()
    for path in inbound.rglob("*.csv"):
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                for column in ("forename", "surname"):
                    if len(row.get(column) or "") >= 5:
                        values.add(row[column])
                for column in ("postcode", "nino", "upn", "person_ref", "family_ref"):
                    if len(row.get(column) or "") >= 6:
                        values.add(row[column])
                if row.get("date_of_birth"):
                    values.add(row["date_of_birth"])
    return values - {reference_date.isoformat(), date.fromordinal(reference_date.toordinal() - 1).isoformat()}


def leaks(pattern: re.Pattern[bytes], places: Iterable[Path], texts: Iterable[str] = ()) -> list[str]:
    found = []
    for place in places:
        for path in ([place] if place.is_file() else place.rglob("*")):
            if path.is_file():
                hit = pattern.search(path.read_bytes())
                if hit:
                    found.append(f"{path}: {hit.group(0)[:3]!r}...")
    for text in texts:
        hit = pattern.search(text.encode())
        if hit:
            found.append(f"output: {hit.group(0)[:3]!r}...")
    return found
