"""Test helpers: a complete config for a temporary folder, feed files written by hand, and the graph of
OpenLineage events."""

from __future__ import annotations

import copy
import csv
import json
import re
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import yaml

from tfp.config import Config, example_settings, load_config
from tfp.feeds import SOURCES

# The example config's settings (its criteria, quality, disclosure, keys ...) with a test borough's name.
BASE = example_settings(local_authority={"code": "E09000031", "name": "Test Borough"},
                        delivery={"transport": "directory", "path": "delivered", "encryption": "none"})
for _key in ("warehouse_url", "work_dir", "sources"):
    BASE.pop(_key)
BASE["retention"] = {**BASE["retention"], "delete_all_after": "2030-03-31"}


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_config(folder: Path, warehouse_url: str, inbound: str = "inbound", keep_local_files: bool | None = None,
                 **overrides) -> Path:
    """A config file in ``folder`` reading every source from ``folder/<inbound>/<source>``; the config's own
    ``inbound`` key is set by ``keep_local_files`` (``inbound`` names the folder)."""
    raw = _merge(BASE, {
        "warehouse_url": warehouse_url,
        "work_dir": "work",
        "sources": {s: {"transport": "directory", "path": f"{inbound}/{s}"} for s in SOURCES},
    })
    if keep_local_files is not None:
        raw["inbound"] = {"keep_local_files": keep_local_files}
    raw = _merge(raw, overrides)
    for s in raw["sources"]:
        if raw["sources"][s]["transport"] == "directory":
            (folder / raw["sources"][s]["path"]).mkdir(parents=True, exist_ok=True)
    path = folder / "tfp.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def make_config(folder: Path, warehouse_url: str, **overrides) -> Config:
    return load_config(write_config(folder, warehouse_url, **overrides))


def write_feed(folder: Path, source: str, name: str, header: list[str], rows: list[list[str]]) -> Path:
    """A feed file written by hand (values are joined with commas: keep them free of commas/quotes)."""
    path = folder / "inbound" / source / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")
    return path


def personal_values(partners: Path, reference_date: date) -> set[str]:
    """Every name (5+ letters), date of birth, postcode, NINO and UPN in a folder of feeds."""
    values: set[str] = set()
    for path in partners.glob("*/*.csv"):
        if path.parent.name == "truth":
            continue
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                for column in ("forename", "surname"):
                    if len(row.get(column) or "") >= 5:
                        values.add(row[column])
                for column in ("postcode", "nino", "upn"):
                    if len(row.get(column) or "") >= 6:
                        values.add(row[column])
                if row.get("date_of_birth"):
                    values.add(row["date_of_birth"])
    # the run's own dates appear in Airflow's logs as timestamps; they are not anyone's birthday here
    return values - {reference_date.isoformat(), (reference_date - timedelta(days=1)).isoformat()}


def leak_pattern(values: set[str]) -> re.Pattern[bytes]:
    """Any of the values as a whole word: "Field" in "RenderedTaskInstanceFields" is not a leak of a surname."""
    alternatives = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    return re.compile(f"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])".encode())


def read_lineage_events(path: Path) -> list[dict]:
    """The OpenLineage events of a file transport with ``append: true`` (one JSON event a line)."""
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def lineage_edges(events: list[dict]) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """Dataset (namespace, name) -> the datasets a task made from it, over every COMPLETE event."""
    edges: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for event in events:
        if event["eventType"] != "COMPLETE":
            continue
        for i in event.get("inputs") or []:
            for o in event.get("outputs") or []:
                edges[(i["namespace"], i["name"])].add((o["namespace"], o["name"]))
    return edges


def lineage_downstream(edges: dict[tuple[str, str], set[tuple[str, str]]], start: tuple[str, str]) -> set[tuple[str, str]]:
    """Every dataset made, directly or not, from ``start``."""
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
