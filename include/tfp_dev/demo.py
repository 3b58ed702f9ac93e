"""``tfp demo``: the whole night from nothing, on this machine.

Generates a small synthetic borough, serves its feeds from a local SFTP server standing in for
the partners, runs the real ``tfp_nightly`` DAG through SFTP both ways with age encryption to a
second local SFTP server standing in for the ONS, then verifies the delivery as the recipient
would. Everything lives under ``./demo`` (recreated on every run); the keys are generated fresh.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path

import yaml

from tfp.config import example_settings
from tfp.feeds import SOURCES

DEMO_DATE = date(2025, 3, 31)
FAMILIES = 400
LA_CODE = "E09000031"


def _connection(server, password: str) -> str:
    return json.dumps({
        "conn_type": "sftp", "host": server.host, "port": server.port, "login": "tfp", "password": password,
        "extra": {"host_key": server.host_key, "no_host_key_check": False},
    })


def run_demo(root: Path | None = None) -> int:
    from tfp.keys import generate_keys
    from tfp.verify import verify_delivery
    from tfp_airflow.runner import run_nightly
    from tfp_dev.generate import generate
    from tfp_dev.sftpserver import SftpServer

    root = (root or Path.cwd() / "demo").resolve()
    if root.exists():
        shutil.rmtree(root)
    partners, recipient, keys_dir = root / "partners", root / "recipient", root / "keys"
    print(f"1/5 generating a synthetic borough of {FAMILIES} families for {DEMO_DATE} ...")
    generate(partners, families=FAMILIES, seed=7, on=DEMO_DATE)
    truth = partners / "truth"
    shutil.move(str(truth), str(root / "truth"))  # the truth stays with the tester, not on the partner server
    print("2/5 generating this installation's keys ...")
    generate_keys(keys_dir)
    os.environ["TFP_PSEUDONYM_KEY"] = (keys_dir / "pseudonym.key").read_text().strip()
    os.environ["TFP_LINKAGE_KEY"] = (keys_dir / "linkage.key").read_text().strip()
    os.environ["TFP_SIGNING_KEY"] = (keys_dir / "signing.key").read_text().strip()
    (recipient / "inbound" / LA_CODE).mkdir(parents=True)

    with SftpServer(partners, password="partner-demo") as partner_server, \
         SftpServer(recipient, password="ons-demo") as ons_server:
        print(f"3/5 partner SFTP on 127.0.0.1:{partner_server.port}, recipient SFTP on 127.0.0.1:{ons_server.port} "
              "(host keys pinned)")
        os.environ["AIRFLOW_CONN_SFTP_PARTNERS"] = _connection(partner_server, "partner-demo")
        os.environ["AIRFLOW_CONN_SFTP_ONS"] = _connection(ons_server, "ons-demo")
        config = example_settings(
            local_authority={"code": LA_CODE, "name": "Demo Borough"},
            warehouse_url="sqlite:///var/warehouse.db",
            work_dir="var",
            sources={s: {"transport": "sftp", "conn_id": "sftp_partners", "path": f"/{s}"} for s in SOURCES},
            delivery={"transport": "sftp", "conn_id": "sftp_ons", "path": f"/inbound/{LA_CODE}",
                      "encryption": "age", "recipient": (keys_dir / "age.pub").read_text().strip()},
        )
        config_path = root / "tfp.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        print(f"4/5 running tfp_nightly for {DEMO_DATE} through Airflow (dag.test) ...")
        os.environ.setdefault("AIRFLOW_HOME", str(root / "var" / "airflow"))
        status = run_nightly(config_path, DEMO_DATE)
    if status != 0:
        print("the nightly run failed: see the task logs above")
        return status
    delivered = recipient / "inbound" / LA_CODE
    received = root / "received"
    print("5/5 verifying the delivery as the ONS would (signature, checksums, decryption) ...")
    verified = verify_delivery(delivered, keys_dir / "signing.pub", keys_dir / "age.key", received)
    report = root / "var" / "reports" / DEMO_DATE.isoformat()
    print()
    print("What happened:")
    print(f"  partner feeds (synthetic):   {partners}")
    print(f"  delivered, encrypted+signed: {delivered}")
    print(f"  decrypted by the recipient:  {received}")
    print(f"  run report (counts only):    {report / 'run_report.html'}")
    print(f"  the generator's truth:       {root / 'truth'}")
    print(f"  config used:                 {config_path}")
    return verified
