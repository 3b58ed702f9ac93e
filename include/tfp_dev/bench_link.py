"""Time the linking stage alone on a generated borough: ``python -m tfp_dev.bench_link --families 20000``.

Generates the borough (cached under ``var/bench``), lands, validates and stages it into a fresh
SQLite warehouse, then times ``tfp.link.run_linking`` and prints records per second and this
process's peak resident memory. The figures in the README's performance section come from here.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml

from tfp.config import example_settings
from tfp.feeds import SOURCES

REPO = Path(__file__).resolve().parents[2]
ON = date(2025, 3, 31)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfp_dev.bench_link", description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench")
    args = parser.parse_args(argv)
    from tfp import pipeline
    from tfp.link import run_linking
    from tfp.warehouse import connect, upgrade
    from tfp_dev.generate import generate

    feeds = args.work / f"link-{args.families}-{args.seed}"
    if not (feeds / "truth").exists():
        generate(feeds, families=args.families, seed=args.seed, on=ON)
    run = Path(tempfile.mkdtemp(prefix="tfp-bench-link-"))
    try:
        # Extraction takes the files away from a directory source: work on a copy, keep the cache.
        shutil.copytree(feeds, run / "feeds")
        example = example_settings(
            warehouse_url=f"sqlite:///{run / 'warehouse.db'}", work_dir=str(run / "work"),
            sources={s: {"transport": "directory", "path": str(run / "feeds" / s)} for s in SOURCES},
            delivery={"transport": "directory", "path": str(run / "out"), "encryption": "none"})
        config = run / "tfp.yaml"
        config.write_text(yaml.safe_dump(example))
        for name in ("TFP_PSEUDONYM_KEY", "TFP_LINKAGE_KEY"):
            os.environ.setdefault(name, os.urandom(32).hex())
        os.environ.setdefault("TFP_SIGNING_KEY", "A" * 43 + "=")
        upgrade(example["warehouse_url"])  # a fresh warehouse: what `tfp db upgrade` does
        for source in SOURCES:
            for stage in (pipeline.extract, pipeline.validate, pipeline.stage):
                stage(str(config), ON, source)
        engine = connect(example["warehouse_url"])
        started = time.perf_counter()
        counts = run_linking(engine, ON, 0.95)
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(run, ignore_errors=True)
    records = sum(c["linked"] + c["unlinked"] for c in counts.values())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"linking stage, {args.families} families: {records} records in {seconds:.1f} s "
          f"({records / seconds:,.0f} records/s), peak RSS of the process {peak_mb:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
