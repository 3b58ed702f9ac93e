"""``make airflow``: ``tfp airflow`` on a demo borough, generated into ``var/airflow-demo`` the first time.

The borough's files are dated for the night the scheduler runs first (the latest complete 01:00
London interval), so the first thing the grid shows is a real scheduled night, with no click. Partner
folders are directory transports that keep their files; the delivery is age-encrypted and signed into
``var/airflow-demo/delivered`` with keys made by ``tfp keys``. A later start reuses all of it, and the
Airflow home (``var/airflow-demo/work/airflow``). Only the ``tfp`` command line is used (``tfp generate``,
``tfp keys``, ``tfp airflow``), not the generator's module.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "var" / "airflow-demo"
TFP = str(Path(sys.executable).with_name("tfp"))
LA_CODE = "E09000031"
FAMILIES = 200
KEYS = {"TFP_PSEUDONYM_KEY": "pseudonym.key", "TFP_LINKAGE_KEY": "linkage.key", "TFP_SIGNING_KEY": "signing.key"}


def first_scheduled_night(now: datetime | None = None) -> str:
    """The reference date of the run the scheduler makes when tfp_nightly is unpaused: the start of the
    latest complete interval of its 01:00 Europe/London cron (catchup off)."""
    london = (now or datetime.now(ZoneInfo("Europe/London"))).astimezone(ZoneInfo("Europe/London"))
    return ((london - timedelta(hours=1)).date() - timedelta(days=1)).isoformat()


def prepare(root: Path) -> tuple[Path, str]:
    """Generate what is missing: the partners' feeds, the keys, the config. Returns (config, night)."""
    root.mkdir(parents=True, exist_ok=True)
    night_file = root / "NIGHT"
    if not (root / "partners").exists():
        night = first_scheduled_night()
        print(f"generating a demo borough of {FAMILIES} families for the night of {night} ...", flush=True)
        subprocess.run([TFP, "generate", "--out", str(root / "partners"), "--families", str(FAMILIES),
                        "--seed", "7", "--date", night], check=True)
        shutil.move(str(root / "partners" / "truth"), str(root / "truth"))  # the generator's answers stay aside
        night_file.write_text(night + "\n")
    night = night_file.read_text().strip()
    keys = root / "keys"
    if not keys.exists():
        subprocess.run([TFP, "keys", "--out", str(keys)], check=True, stdout=subprocess.DEVNULL)
    config = root / "tfp.yaml"
    if not config.exists():
        from tfp.config import example_settings
        from tfp.feeds import SOURCES

        raw = example_settings(
            local_authority={"code": LA_CODE, "name": "Demo Borough"},
            warehouse_url="sqlite:///work/warehouse.db",
            work_dir="work",
            sources={s: {"transport": "directory", "path": f"partners/{s}"} for s in SOURCES},
            delivery={"transport": "directory", "path": "delivered", "encryption": "age",
                      "recipient": (keys / "age.pub").read_text().strip()},
            inbound={"keep_local_files": True},  # the demo partners keep their files for the next night
        )
        (root / "delivered").mkdir(exist_ok=True)
        config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return config, night


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    config, night = prepare(args.root.resolve())
    env = dict(os.environ)
    env.pop("AIRFLOW_HOME", None)  # the home tfp run would pick for this config: <work_dir>/airflow
    for name, file in KEYS.items():
        env[name] = (args.root.resolve() / "keys" / file).read_text().strip()
    print(f"demo borough: {config.parent} (its files are for the night of {night}; the first scheduled "
          f"tfp_nightly runs it; to run it again, trigger tfp_nightly with reference_date {night})", flush=True)
    os.execve(TFP, [TFP, "airflow", "--config", str(config), "--port", str(args.port)], env)


if __name__ == "__main__":
    sys.exit(main())
