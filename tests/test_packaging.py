"""tfp as a package: what a run reads besides Python travels in the wheel (issues 14 and 16).

A checkout reads its SQL, GX suites, DAG files and plugin through links inside the packages
(``include/tfp/sql`` -> ``include/sql`` ...); a wheel carries copies (pyproject.toml's package data),
so ``pip install .`` and the image run from any folder. The slow test builds the wheel, installs it
alone into a folder of its own (its dependencies are the test venv's: a fresh venv with the runtime
lock took 141 s here, too long for CI) and runs a whole night with it from outside the checkout.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

import pytest

from conftest import airflow_home
from helpers import write_config

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "include"
# what the links inside the packages point at: the repository's folders, kept where people look for them
LINKS = {"tfp/sql": "include/sql", "tfp/expectations": "expectations", "tfp/tfp.example.yaml": "config/tfp.example.yaml",
         "tfp_airflow/dags": "dags", "tfp_airflow/plugins": "plugins"}
# the files a run reads through them, by folder: every one must be package data
READ = {"include/sql": "**/*.sql", "expectations": "*.json", "dags": "*.py", "plugins": "*.py"}


def test_each_link_inside_the_packages_points_at_the_repository_folder():
    for link, target in LINKS.items():
        path = INCLUDE / link
        assert path.is_symlink(), f"{link} is not a link (a copy would drift from {target})"
        assert path.resolve() == (ROOT / target).resolve(), link


def test_the_package_data_patterns_cover_every_file_a_run_reads():
    """setuptools copies only what package-data names: a new SQL file, suite, DAG file or plugin must match."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = set()
    for package, patterns in package_data.items():
        for pattern in patterns:
            shipped |= {Path(p).resolve() for p in glob.glob(str(INCLUDE / package / pattern), recursive=True)
                        if Path(p).is_file()}
    for folder, pattern in READ.items():
        files = {p.resolve() for p in (ROOT / folder).glob(pattern)}
        assert files, folder
        assert files <= shipped, f"not package data: {sorted(str(p) for p in files - shipped)}"
    assert (ROOT / "config" / "tfp.example.yaml").resolve() in shipped


# -- a whole night from a wheel, outside the checkout ------------------------------------------------

R = date(2025, 3, 31)
SEED, FAMILIES = 20261201, 80  # the golden delivery's borough: the wheel must deliver the same bytes
GOLDEN = ROOT / "tests" / "golden" / f"delivery_seed{SEED}_{FAMILIES}.json"


def _derived(label: str) -> bytes:
    return hashlib.sha256(f"tfp golden test: {label}".encode()).digest()


def _wheel(tmp_path: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the working tree (the build writes build/ and egg-info)."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", source)
    for folder in ("include", "expectations", "config", "dags", "plugins"):  # the links' targets are in these
        shutil.copytree(ROOT / folder, source / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "wheel"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("tfp-*.whl")
    return wheel


@pytest.mark.slow
def test_a_wheel_installed_alone_runs_a_night_from_outside_the_checkout(tmp_path):
    from tfp_dev.generate import generate

    wheel = _wheel(tmp_path)
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # the wheel holds copies, not links, and nothing of the checkout is beside it
    assert (target / "tfp_airflow" / "dags" / "tfp_nightly.py").is_file()
    assert not (target / "tfp_airflow" / "dags").is_symlink() and not (target / "tfp" / "sql").is_symlink()

    root = tmp_path / "borough"  # a new user's folder, outside the checkout
    root.mkdir()
    config = write_config(root, "sqlite:///work/warehouse.db")
    generate(root / "inbound", families=FAMILIES, seed=SEED, on=R)
    env = {**os.environ, "PYTHONPATH": str(target), "AIRFLOW_HOME": str(airflow_home(tmp_path / "airflow")),
           "TFP_PSEUDONYM_KEY": _derived("pseudonym").hex(), "TFP_LINKAGE_KEY": _derived("linkage").hex(),
           "TFP_SIGNING_KEY": base64.b64encode(_derived("signing")).decode()}
    for name in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):  # the tests' own: not a user's
        env.pop(name, None)

    where = subprocess.run([sys.executable, "-c", "import tfp, tfp_airflow.runner as r, tfp.current as c\n"
                            "print(tfp.__file__, r.dags_folder(), c.SQL_DIR, sep='\\n')"],
                           env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(Path(line).is_relative_to(target) for line in where.stdout.split()), where.stdout

    night = subprocess.run([str(target / "bin" / "tfp"), "run", "--config", str(config), "--date", R.isoformat()],
                           env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert night.returncode == 0, night.stdout[-3000:] + night.stderr[-3000:]
    assert "tfp_nightly 2025-03-31: succeeded" in night.stdout
    hashes = {}
    for path in sorted(p for p in (root / "delivered").iterdir() if not p.name.startswith(".")):
        data = path.read_bytes()
        if path.suffix == ".json":  # as the golden test: the manifest's version aside
            manifest = json.loads(data)
            manifest["pipeline_version"] = "<version>"
            data = json.dumps(manifest, sort_keys=True).encode()
        elif path.name.endswith(".sig"):
            continue
        hashes[path.name] = hashlib.sha256(data).hexdigest()
    assert hashes == json.loads(GOLDEN.read_text(encoding="utf-8"))
