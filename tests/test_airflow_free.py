"""The runtime package ``tfp`` imports without Airflow (issue 16 item 5): Airflow is only in ``tfp_airflow``.

Every module of ``tfp`` is imported in a fresh interpreter in which importing ``airflow`` (or any
``airflow.*``) fails; the test passes only when every module imports and ``airflow`` never entered
``sys.modules``. ``tfp_dev`` (the generator, benchmarks, demo) is tooling, not runtime, and is not checked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[1] / "include"

PROBE = r"""
import importlib, importlib.abc, json, pkgutil, sys

class NoAirflow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ImportError(f"{name} is blocked: tfp must not import Airflow")
        return None

sys.meta_path.insert(0, NoAirflow())
import tfp

# Alembic runs env.py and the revisions inside its own context; the grep test below covers them
names = ["tfp"] + [m.name for m in pkgutil.walk_packages(tfp.__path__, "tfp.")
                   if m.name != "tfp.migrations.env" and not m.name.startswith("tfp.migrations.versions")]
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except BaseException as e:
        failed[name] = f"{type(e).__name__}: {e}"
print(json.dumps({"imported": names, "failed": failed,
                  "airflow": sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow."))}))
"""


def test_every_runtime_module_of_tfp_imports_with_airflow_blocked(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={"PYTHONPATH": str(INCLUDE), "PATH": "/usr/bin:/bin",
                                             "GX_ANALYTICS_ENABLED": "False"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert result["airflow"] == []
    # the walk saw the pipeline's modules, not an empty package
    assert {"tfp.cli", "tfp.config", "tfp.sftp", "tfp.notify", "tfp.deployment", "tfp.pipeline"} <= set(result["imported"])


def test_no_source_file_of_tfp_imports_airflow():
    """The grep of issue 16's "done when", as a test: no ``import airflow`` / ``from airflow`` in include/tfp."""
    pattern = re.compile(r"^\s*(import airflow|from airflow)\b", re.M)
    offenders = [str(p.relative_to(INCLUDE)) for p in (INCLUDE / "tfp").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
