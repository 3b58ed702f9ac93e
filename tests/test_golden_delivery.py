"""The golden delivery: a generated borough (fixed seed, fixed keys) delivers the same bytes as it did
when this file was recorded.

It guards restructuring (issue 16): moving code between modules must not move a single byte of what
the recipient receives. The keys are derived here from fixed labels, so nothing secret is stored;
the package is written unencrypted, because age encryption is random by design and Ed25519 signing
is not. A change that is meant to change the delivery re-records the hashes with
``TFP_UPDATE_GOLDEN=1 pytest tests/test_golden_delivery.py`` and says why in its commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from conftest import airflow_home
from helpers import write_config
from tfp_dev.generate import generate

pytestmark = pytest.mark.slow  # a whole night through `tfp run`

R = date(2025, 3, 31)
SEED, FAMILIES = 20261201, 80
GOLDEN = Path(__file__).with_name("golden") / f"delivery_seed{SEED}_{FAMILIES}.json"
TFP = str(Path(sys.executable).with_name("tfp"))


def _derived(label: str) -> bytes:
    return hashlib.sha256(f"tfp golden test: {label}".encode()).digest()


def _delivered_hashes(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "borough"
    root.mkdir()
    config = write_config(root, "sqlite:///work/warehouse.db")
    generate(root / "inbound", families=FAMILIES, seed=SEED, on=R)
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home(tmp_path / "airflow")),
           "TFP_PSEUDONYM_KEY": _derived("pseudonym").hex(), "TFP_LINKAGE_KEY": _derived("linkage").hex(),
           "TFP_SIGNING_KEY": base64.b64encode(_derived("signing")).decode()}
    env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
    done = subprocess.run([TFP, "run", "--config", str(config), "--date", R.isoformat()],
                          env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = root / "delivered"
    hashes = {}
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        data = path.read_bytes()
        if path.suffix == ".json":  # the manifest names the pipeline's version, which a release changes
            manifest = json.loads(data)
            manifest["pipeline_version"] = "<version>"
            data = json.dumps(manifest, sort_keys=True).encode()
        elif path.name.endswith(".sig"):  # signs the manifest with its version: checked by verify, not here
            continue
        hashes[path.name] = hashlib.sha256(data).hexdigest()
    return hashes


def test_a_generated_borough_delivers_the_recorded_bytes(tmp_path):
    hashes = _delivered_hashes(tmp_path)
    assert len(hashes) == 5, hashes  # submission, summary, withdrawals, progress, manifest
    submission = tmp_path / "borough" / "delivered" / f"tfp_submission_E09000031_{R:%Y%m%d}.csv"
    assert len(submission.read_text(encoding="utf-8").splitlines()) > 20  # a real night, not an empty one
    if os.environ.get("TFP_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert hashes == json.loads(GOLDEN.read_text(encoding="utf-8"))
