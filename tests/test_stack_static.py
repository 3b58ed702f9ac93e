"""The production-shaped stack runs with no more privilege than it needs (issue 20, item 3).

No Docker engine exists here, so docker-compose.yaml and the Dockerfile are parsed and asserted, and
the scripts they rely on (scripts/init-env.sh, scripts/secrets-entrypoint.sh, scripts/pin-images.sh)
are run for real in a temporary folder. tests/test_stack_roles.py runs the PostgreSQL role set-up.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# The venv running the tests (the repo's .venv under make; /work/main's in a git worktree, which has none).
VENV = Path(sys.prefix)
AIRFLOW_CONFIG = VENV / "lib/python3.11/site-packages/airflow/config_templates/config.yml"
PINNED = re.compile(r"^[a-z0-9][a-z0-9./_-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*@sha256:[0-9a-f]{64}$")
PLACEHOLDER = "@sha256:UNRESOLVED"

AIRFLOW_BASE = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
                "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"}
CELERY = {"AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"}
# service -> the secrets it sees, by the name (or path) it sees them under
NEEDS = {
    "postgres": {"postgres_password", "airflow_db_password", "tfp_owner_password", "tfp_app_password"},
    "redis": {"redis_password"},
    "airflow-apiserver": AIRFLOW_BASE | {"AIRFLOW__API__SECRET_KEY"},
    "airflow-scheduler": AIRFLOW_BASE | CELERY,
    "airflow-dag-processor": AIRFLOW_BASE,
    # the worker's and triggerer's log servers check requests the api-server signs with [api] secret_key
    "airflow-triggerer": AIRFLOW_BASE | {"AIRFLOW__API__SECRET_KEY"},
    "airflow-worker": AIRFLOW_BASE | CELERY | {"AIRFLOW__API__SECRET_KEY", "TFP_PSEUDONYM_KEY", "TFP_LINKAGE_KEY", "TFP_SIGNING_KEY",
                                              "TFP_WAREHOUSE_PASSWORD"},
    "airflow-init": AIRFLOW_BASE | {"_AIRFLOW_WWW_USER_PASSWORD", "TFP_OWNER_PASSWORD"},
    "recipient-sftp": {"/etc/sftp/users.conf"},
}
KEY_NAMES = ("TFP_PSEUDONYM_KEY", "TFP_LINKAGE_KEY", "TFP_SIGNING_KEY", "TFP_WAREHOUSE_PASSWORD")


def _secrets(service: dict) -> dict[str, str]:
    """target -> source of a service's secrets (short syntax: both the secret's name)."""
    out = {}
    for entry in service.get("secrets", []):
        if isinstance(entry, str):
            out[entry] = entry
        else:
            out[entry.get("target", entry["source"])] = entry["source"]
    return out


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


@functools.cache
def _airflow_config() -> dict:
    return yaml.safe_load(AIRFLOW_CONFIG.read_text())


def _airflow_options(section: str) -> set[str]:
    return set(_airflow_config()[section]["options"])


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """scripts/init-env.sh run for real into a fresh folder."""
    folder = tmp_path_factory.mktemp("stack")
    env = {**os.environ, "TFP_STACK_DIR": str(folder), "PYTHON": str(VENV / "bin/python"),
           "AIRFLOW_UID": str(os.getuid() or 50000)}
    subprocess.run([ROOT / "scripts/init-env.sh"], env=env, check=True, capture_output=True, text=True)
    return folder


def _read(folder: Path, name: str) -> str:
    return (folder / "secrets" / name).read_text().strip()


# -- secrets: none shared by every service, none in the file, each service only what it needs --

def test_no_env_file_hands_every_secret_to_every_container():
    assert "env_file" not in COMPOSE.get("x-airflow-common", {})
    offenders = [name for name, service in SERVICES.items() if "env_file" in service]
    assert not offenders, f"env_file gives these services every secret: {offenders}"


def test_compose_interpolates_no_secret():
    """Only the uid and the project folder are interpolated: a ${PASSWORD} would land in
    `docker inspect` of every container that names it."""
    variables = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", (ROOT / "docker-compose.yaml").read_text()))
    assert variables <= {"AIRFLOW_UID", "AIRFLOW_PROJ_DIR"}, variables


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_each_service_sees_only_the_secrets_it_needs(name):
    assert set(_secrets(SERVICES[name])) == NEEDS[name]


def test_every_secret_is_a_file_that_init_env_writes(generated):
    declared = COMPOSE["secrets"]
    used = {source for service in SERVICES.values() for source in _secrets(service).values()}
    assert used == set(declared), "a secret declared but mounted nowhere, or mounted but not declared"
    written = {p.name for p in (generated / "secrets").iterdir()}
    for name, spec in declared.items():
        assert set(spec) == {"file"} and spec["file"].startswith("./secrets/"), name
        assert Path(spec["file"]).name in written, f"init-env.sh does not write {spec['file']}"
    # the plaintext SFTP password is for the maintainer's sftp_ons Connection, the signing public key
    # for the recipient: in no container
    for name in ("recipient_sftp_password", "signing.pub"):
        assert name in written and name not in declared


def test_keys_and_warehouse_password_reach_the_worker_only():
    for key in KEY_NAMES:
        holders = [name for name, service in SERVICES.items() if key in _secrets(service)]
        assert holders == ["airflow-worker"], (key, holders)
    holders = [name for name, s in SERVICES.items() if "_AIRFLOW_WWW_USER_PASSWORD" in _secrets(s)]
    assert holders == ["airflow-init"]


def test_init_env_writes_private_files_and_no_secret_in_dot_env(generated):
    folder = generated / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((generated / "logs").stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == (0o644 if path.name == "signing.pub" else 0o600), path.name
        assert path.read_text().strip(), f"{path.name} is empty"
    assert [line.split("=")[0] for line in (generated / ".env").read_text().split()] == ["AIRFLOW_UID"]
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/secrets/" in ignored and ".env" in ignored


def test_init_env_refuses_to_overwrite_secrets(generated):
    before = _read(generated, "TFP_PSEUDONYM_KEY")
    env = {**os.environ, "TFP_STACK_DIR": str(generated), "AIRFLOW_UID": "50000"}
    result = subprocess.run([ROOT / "scripts/init-env.sh"], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and _read(generated, "TFP_PSEUDONYM_KEY") == before


def test_generated_keys_are_ones_tfp_accepts(generated, monkeypatch):
    from tfp.config import load_keys, parse_config

    config = parse_config(yaml.safe_load((ROOT / "config/tfp.compose.yaml").read_text()), ROOT)
    for name in ("TFP_PSEUDONYM_KEY", "TFP_LINKAGE_KEY", "TFP_SIGNING_KEY"):
        monkeypatch.setenv(name, _read(generated, name))
    load_keys(config)


def test_secrets_entrypoint_exports_variable_named_secrets_only(tmp_path):
    (tmp_path / "TFP_SIGNING_KEY").write_text("c2lnbmluZw==\n")
    (tmp_path / "redis_password").write_text("not-an-env-var\n")
    env = {"PATH": os.environ["PATH"], "TFP_SECRETS_DIR": str(tmp_path), "TFP_NEXT_ENTRYPOINT": "/bin/sh"}
    out = subprocess.run([ROOT / "scripts/secrets-entrypoint.sh", "-c", "env; umask"], env=env,
                         check=True, capture_output=True, text=True).stdout.split()
    assert "TFP_SIGNING_KEY=c2lnbmluZw==" in out
    assert not any(line.startswith("redis_password") for line in out)
    assert out[-1] == "0077", "files the Airflow processes create must be private to their user"


# -- ports: loopback only ------------------------------------------------------------------------

def test_every_published_port_binds_loopback():
    published = 0
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            published += 1
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this host"
    assert published >= 2


# -- redis: a password, and the broker URL carries it --------------------------------------------

def _compose_unescape(value: str) -> str:
    return value.replace("$$", "$")


def test_redis_requires_a_password_from_its_secret():
    redis = SERVICES["redis"]
    command = _compose_unescape(" ".join(redis["command"]))
    assert re.search(r"requirepass \$\(cat /run/secrets/redis_password\)", command), command
    assert "redis_password" in _secrets(redis)
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])  # the healthcheck must authenticate


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed")
def test_redis_as_composed_refuses_clients_without_the_password(generated, tmp_path):
    """The service's own command, run by a real redis-server on a free loopback port."""
    import socket
    import time

    import redis as redis_py

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [_compose_unescape(a) for a in SERVICES["redis"]["command"]]
    script = argv[2].replace("/run/secrets/", f"{generated}/secrets/").replace(
        "requirepass", f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nrequirepass", 1)
    server = subprocess.Popen([argv[0], argv[1], script], stdout=subprocess.DEVNULL)
    try:
        url = _read(generated, "AIRFLOW__CELERY__BROKER_URL").replace("@redis:6379", f"@127.0.0.1:{port}")
        for _ in range(100):
            try:
                assert redis_py.Redis.from_url(url).ping()
                break
            except redis_py.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:  # a client without it
            client.sendall(b"PING\r\n")
            assert client.recv(100).startswith(b"-NOAUTH")
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()
        assert _read(generated, "redis_password") not in cmdline, "the password is on the command line"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_broker_url_carries_the_redis_password_and_is_not_in_the_file(generated):
    text = (ROOT / "docker-compose.yaml").read_text()
    assert "redis://" not in text, "the broker URL belongs in a secret file"
    for name, service in SERVICES.items():
        assert "AIRFLOW__CELERY__BROKER_URL" not in _environment(service), name
    url = _read(generated, "AIRFLOW__CELERY__BROKER_URL")
    assert url == f"redis://:{_read(generated, 'redis_password')}@redis:6379/0"
    assert {n for n, s in SERVICES.items() if "AIRFLOW__CELERY__BROKER_URL" in _secrets(s)} == {
        "airflow-scheduler", "airflow-worker"}


# -- sftp: password from a file, host keys kept ----------------------------------------------------

def test_sftp_password_comes_from_a_file_as_a_hash(generated):
    sftp = SERVICES["recipient-sftp"]
    assert "command" not in sftp and "environment" not in sftp, "no password on a command line or in env"
    assert _secrets(sftp) == {"/etc/sftp/users.conf": "recipient_sftp_users"}
    user, hashed, flag, *_ = _read(generated, "recipient_sftp_users").split(":")
    assert (user, flag) == ("ons", "e") and hashed.startswith("$6$")
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], check=True, text=True,
                           input=_read(generated, "recipient_sftp_password"), capture_output=True).stdout.strip()
    assert again == hashed


def test_sftp_host_keys_survive_recreation_in_a_named_volume():
    mounts = dict(v.split(":", 1) for v in SERVICES["recipient-sftp"]["volumes"])
    host_keys = {source: target for source, target in mounts.items() if target.startswith("/etc/ssh")}
    assert list(host_keys.values()) == ["/etc/ssh"]
    (volume,) = host_keys
    assert volume in COMPOSE["volumes"], "a bind mount or an anonymous volume would not be kept"


# -- images and providers pinned ------------------------------------------------------------------

def _image_refs() -> list[str]:
    refs = [s["image"] for s in SERVICES.values() if "image" in s and "build" not in s]
    refs += re.findall(r"^FROM\s+(\S+)", DOCKERFILE, flags=re.M)
    return refs


def _lock() -> list[str]:
    lines = (ROOT / "images.lock").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("ref", [
    pytest.param(ref, marks=pytest.mark.xfail(strict=True, reason="digest not obtainable offline: run "
                                                                   "scripts/pin-images.sh with Docker"))
    if ref.endswith(PLACEHOLDER) else ref
    for ref in _image_refs()])
def test_every_image_is_pinned_by_tag_and_digest(ref):
    assert PINNED.match(ref), ref


def test_no_image_is_a_bare_tag_and_all_agree_with_the_lock():
    """A placeholder may wait for pin-images.sh (compose then refuses to pull it); a bare tag may not."""
    for ref in _image_refs():
        assert PINNED.match(ref) or re.match(r"^[a-z0-9./_-]+:[\w.-]+" + re.escape(PLACEHOLDER) + "$", ref), ref
    assert sorted(_image_refs()) == sorted(_lock())


def test_built_services_use_the_pinned_dockerfile():
    for name, service in SERVICES.items():
        if "build" in service:
            assert service["build"] == "." and service["image"].startswith("tfp-airflow:"), name
            assert "@" not in service["image"]  # built here; its base is what is pinned


def _pip_installs() -> list[list[str]]:
    text = DOCKERFILE.replace("\\\n", " ")
    commands = []
    for line in re.findall(r"^RUN\s+(.*)$", text, flags=re.M):
        for part in re.split(r"&&|;", line):
            words = shlex.split(part)
            if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
                commands.append(words[words.index("install") + 1:])
    return commands


def test_dockerfile_installs_exact_versions_only():
    installs = _pip_installs()
    assert installs
    for args in installs:
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-r", "--requirement", "-c", "--constraint"):
                lines = (ROOT / Path(args[i + 1]).name).read_text().splitlines()
                reqs = [x.split("#")[0].strip() for x in lines if x.split("#")[0].strip()]
                unpinned = [r for r in reqs if not re.match(r"^[A-Za-z0-9_.\[\],-]+==[\w.]+$", r)]
                assert not unpinned, f"{args[i + 1]} has requirements without == pins: {unpinned}"
                i += 2
                continue
            if arg == "/opt/tfp":  # tfp itself, from the copied source
                assert "--no-deps" in args, "only tfp itself, no deps"
                i += 1
                continue
            if not arg.startswith("-"):
                assert re.match(r"^[A-Za-z0-9_.\[\],-]+==[\w.]+$", arg), f"unpinned pip install: {arg}"
            i += 1


def test_the_image_installs_the_runtime_lock_and_tfp_alone_no_dev_extra():
    """tfp_dev, requirements-dev.txt and the [dev] extra stay out of the image (issue 16, item 1)."""
    installs = _pip_installs()
    words = [arg for args in installs for arg in args]
    assert "/opt/tfp/requirements.txt" in words
    assert not [w for w in words if "requirements-dev" in w or "[" in w], "a dev lock or an extra in the image"
    assert [args for args in installs if "/opt/tfp" in args] == [["--no-cache-dir", "--no-deps", "/opt/tfp"]]
    copied = [line.split()[-2] for line in DOCKERFILE.splitlines() if line.startswith("COPY")]
    assert not [c for c in copied if c in ("include", "include/", ".") or "tfp_dev" in c]
    assert {"include/tfp", "include/tfp_airflow"} <= set(copied)


def _copies() -> set[tuple[str, str]]:
    """The Dockerfile's COPY lines as (source, destination) pairs (the last source of each line)."""
    return {(line.split()[-2], line.split()[-1]) for line in DOCKERFILE.splitlines() if line.startswith("COPY")}


def test_the_image_installs_tfp_as_a_package_with_everything_its_links_point_at():
    """tfp is installed as a package, not -e: it then reads its SQL, GX suites, DAG files and plugin from
    site-packages, which the build copies in through the packages' links (tfp.resources). So every link
    inside include/tfp and include/tfp_airflow must find its target in /opt/tfp, where the build runs."""
    installs = _pip_installs()
    assert not [args for args in installs if "-e" in args or "--editable" in args], "an editable install"
    links = [p for pkg in ("tfp", "tfp_airflow") for p in (ROOT / "include" / pkg).iterdir() if p.is_symlink()]
    targets = {str(p.resolve().relative_to(ROOT)) for p in links}
    assert {"include/sql", "expectations", "config/tfp.example.yaml", "dags", "plugins"} <= targets
    for target in targets:
        assert (target, f"/opt/tfp/{target}") in _copies(), f"the image build cannot follow the link to {target}"


def test_the_scheduler_and_tfp_run_in_a_container_read_the_same_dag_files():
    """The compose stack names the DAGs folder (tfp run honours AIRFLOW__CORE__DAGS_FOLDER), and the image
    copies the DAG files there."""
    for name in ("airflow-scheduler", "airflow-dag-processor", "airflow-worker"):
        folder = _environment(SERVICES[name])["AIRFLOW__CORE__DAGS_FOLDER"]
        assert ("dags", folder) in _copies(), name
    # the compose stack adds nothing at start-up (the base image's _PIP_ADDITIONAL_REQUIREMENTS)
    for name, service in SERVICES.items():
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in _environment(service), name
        assert "pip install" not in str(service.get("command", "")), name


def test_dockerfile_runs_as_airflow():
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.M)
    assert users and users[-1] not in ("root", "0", "0:0")


# -- no root, private logs, sensitive names -------------------------------------------------------

@pytest.mark.parametrize("name", sorted(set(SERVICES) - {"recipient-sftp"}))
def test_services_run_as_a_non_root_user(name):
    user = str(SERVICES[name].get("user", ""))
    assert user and user.split(":")[0] not in ("0", "root"), f"{name} runs as {user or 'the image default'}"


@pytest.mark.parametrize("name", sorted(set(SERVICES) - {"recipient-sftp"}))
def test_services_drop_every_capability_and_cannot_gain_privileges(name):
    """sshd in the stand-in needs its capabilities (chroot, setuid); nothing else does."""
    assert SERVICES[name].get("cap_drop") == ["ALL"], name
    assert "no-new-privileges:true" in SERVICES[name].get("security_opt", []), name


def test_task_logs_are_0600_in_0700_folders():
    options = _airflow_options("logging")
    for option, mode in (("file_task_handler_new_folder_permissions", "0o700"),
                         ("file_task_handler_new_file_permissions", "0o600")):
        assert option in options, f"Airflow has no [logging] {option}"
        for name, service in SERVICES.items():
            if "build" in service:
                assert _environment(service).get(f"AIRFLOW__LOGGING__{option.upper()}") == mode, (name, option)


def test_key_variable_names_are_registered_as_sensitive():
    assert "sensitive_var_conn_names" in _airflow_options("core")
    for name, service in SERVICES.items():
        if "build" in service:
            names = _environment(service).get("AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES", "").split(",")
            # Airflow compares the entries as written against the lower-cased Variable name
            assert {k.lower() for k in KEY_NAMES} <= set(names), name


# -- the warehouse apart from Airflow's metadata --------------------------------------------------

def test_warehouse_is_its_own_database_and_role(generated):
    from sqlalchemy.engine import make_url

    config = yaml.safe_load((ROOT / "config/tfp.compose.yaml").read_text())
    warehouse = make_url(config["warehouse_url"])
    assert (warehouse.username, warehouse.database, warehouse.password) == ("tfp_app", "tfp", None)
    assert config["warehouse_password_env"] == "TFP_WAREHOUSE_PASSWORD"
    metadata = make_url(_read(generated, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"))
    assert (metadata.username, metadata.database) == ("airflow", "airflow")
    assert metadata.password == _read(generated, "airflow_db_password")
    assert len({_read(generated, n) for n in ("postgres_password", "airflow_db_password",
                                              "tfp_owner_password", "tfp_app_password")}) == 4
    mounts = SERVICES["postgres"]["volumes"]
    assert "./scripts/postgres-init.sh:/docker-entrypoint-initdb.d/10-tfp.sh:ro" in mounts
    assert _environment(SERVICES["postgres"])["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in _environment(SERVICES["postgres"])


def test_pin_images_rewrites_every_reference(tmp_path):
    """scripts/pin-images.sh against a stand-in `docker` that answers one digest for every tag."""
    for name in ("images.lock", "docker-compose.yaml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    digest = "sha256:" + "ab" * 32
    (bin_dir / "docker").write_text(  # the shape of `docker buildx imagetools inspect NAME:TAG`
        f'#!/bin/sh\nprintf "Name:      %s\\nMediaType: application/vnd.oci.image.index.v1+json\\n'
        f'Digest:    {digest}\\n\\nManifests:\\n  Name: x@sha256:{"cd" * 32}\\n" "$4"\n')
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "TFP_STACK_DIR": str(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    check = [ROOT / "scripts/pin-images.sh", "--check"]
    if PLACEHOLDER in (ROOT / "images.lock").read_text():
        assert subprocess.run(check, env=env, capture_output=True).returncode != 0
    subprocess.run([ROOT / "scripts/pin-images.sh"], env=env, check=True, capture_output=True)
    subprocess.run(check, env=env, check=True, capture_output=True)
    for name in ("docker-compose.yaml", "Dockerfile"):
        assert PLACEHOLDER not in (tmp_path / name).read_text()
    assert all(line.endswith("@" + digest) for line in
               (x for x in (tmp_path / "images.lock").read_text().splitlines() if x and not x.startswith("#")))


def test_the_image_carries_airflow_local_settings_so_celery_workers_preload():
    """Issue 18: the preload (and the queue policy) live in config/airflow_local_settings.py, which Airflow
    imports from $AIRFLOW_HOME/config; the image puts it there for every container built from it."""
    assert ("config/airflow_local_settings.py", "/opt/airflow/config/airflow_local_settings.py") in _copies()
    assert "preload" in (ROOT / "config" / "airflow_local_settings.py").read_text()
