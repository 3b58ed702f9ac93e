"""The ``tfp`` command line (contract section 1). Each command imports what it needs when it runs: the
Airflow adapter (``tfp_airflow``) only in the commands that use Airflow (run, retention, db upgrade's
password from a Variable), so the rest work where Airflow is not installed."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

from tfp.errors import ConfigError, DevToolMissing


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {value!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the tfp_nightly DAG for one reference date (dag.test)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--date", required=True, type=_date)

    p = sub.add_parser("retention", help="run the tfp_retention DAG for one date (dag.test)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--date", required=True, type=_date)
    p.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")

    p = sub.add_parser("airflow", help="a real local Airflow for this config, in the foreground (Ctrl-C stops it)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--port", type=int, default=8080, help="the api-server's port on 127.0.0.1 (default 8080)")

    p = sub.add_parser("generate", help="write a synthetic borough's feeds and its truth folder")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--families", required=True, type=int)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--date", required=True, type=_date)
    p.add_argument("--health", action="store_true",
                   help="add the optional health source (NHS numbers, treatment episodes, mental-health contacts)")
    p.add_argument("--partners", action="append", default=[], metavar="SOURCE=ID,ID,...",
                   help="split a source's feeds among partners (out/<source>/<id>/...), e.g. "
                        "housing=clarion,peabody,hyde; repeat for several sources (default: one partner each)")
    p.add_argument("--support-services", action="store_true",
                   help="also write the optional support_services feed and its cross-check truth (off by default: "
                        "the other files are the same either way, but for some roster attached dates)")

    sub.add_parser("demo", help="from nothing: generate, serve over SFTP, run, deliver, verify")

    p = sub.add_parser("link", help="link a file of records to a roster file with the pipeline's model")
    p.add_argument("--roster", required=True, type=Path)
    p.add_argument("--records", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threshold", type=float, default=0.95)

    p = sub.add_parser("keys", help="generate the keys of a new installation")
    p.add_argument("--out", required=True, type=Path)

    p = sub.add_parser("db", help="the warehouse schema")
    db = p.add_subparsers(dest="db_command", required=True)
    p = db.add_parser("upgrade", help="migrate the warehouse schema to this tfp's revision (as its owner)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--user", help="connect as this database role instead of the config's (the owner)")
    p.add_argument("--password-env", help="environment variable or Airflow Variable holding that role's password")

    p = sub.add_parser("review", help="the linkage review queue: export it for a reviewer, import the decisions")
    review = p.add_subparsers(dest="review_command", required=True)
    p = review.add_parser("export", help="a night's undecided review pairs as an age-encrypted CSV")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--date", required=True, type=_date)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--recipient", help="the reviewer's age public key (age1...); default linkage.review_recipient")
    p = review.add_parser("import", help="record a reviewer's decisions (CSV, or .age with --identity)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--identity", type=Path, help="an age identity file, when FILE is age-encrypted")
    p.add_argument("file", type=Path)

    p = sub.add_parser("verify-delivery", help="what the recipient runs: check signature and checksums, decrypt")
    p.add_argument("dir", type=Path)
    p.add_argument("--signing-public-key", required=True, type=Path)
    p.add_argument("--age-identity", type=Path)
    p.add_argument("--identifiers-identity", type=Path,
                   help="the trusted third party's age identity: decrypts only tfp_identifiers_* (needs --out; "
                        "not with --age-identity)")
    p.add_argument("--out", type=Path)
    return parser


def _dev_tool(command: str, module: str, needs: tuple[str, ...]) -> ModuleType:
    """Import a tfp_dev module for a development command, or say in one line how to get it.

    The generator and the demo live in tfp_dev, whose dependencies come with the ``[dev]`` extra;
    the production image has neither. ``needs`` are imported up front because the generator imports
    Faker only when it first needs a name, which would otherwise fail half way through writing feeds.
    """
    try:
        for name in ("tfp_dev", *needs):
            importlib.import_module(name)
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = (e.name or "").partition(".")[0]
        if missing not in ("tfp_dev", *needs):
            raise
        raise DevToolMissing(f"tfp {command} is a development tool and {missing} is not installed") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tfp.errors import TfpError

    try:
        return _dispatch(args)
    except TfpError as e:  # a config, key, input or set-up error: its message and what to do, no traceback
        print(f"tfp: {e}", file=sys.stderr)
        print(f"  what to do: {e.hint}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tfp keys --out k | head`: the reader left; no traceback (Python's own recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from tfp_airflow.runner import run_nightly

        return run_nightly(args.config, args.date)
    if args.command == "retention":
        from tfp_airflow.runner import run_retention

        return run_retention(args.config, args.date, dry_run=args.dry_run)
    if args.command == "airflow":
        from tfp_airflow.local import run_local_airflow  # Airflow only for this command

        return run_local_airflow(args.config, args.port)
    if args.command == "generate":
        generate = _dev_tool("generate", "tfp_dev.generate", ("faker",)).generate
        split = {}
        for item in args.partners:
            source, _, ids = item.partition("=")
            if not ids:
                raise ConfigError(f"--partners {item}: expected SOURCE=ID,ID,...")
            split[source.strip()] = tuple(i.strip() for i in ids.split(",") if i.strip())
        counts = generate(args.out, families=args.families, seed=args.seed, on=args.date, health=args.health,
                          support=args.support_services, partners=split or None)
        print(f"wrote {sum(counts.values())} rows in {len(counts)} files to {args.out}")
        return 0
    if args.command == "demo":
        return _dev_tool("demo", "tfp_dev.demo", ("faker", "asyncssh")).run_demo()
    if args.command == "link":
        from tfp.link import link_files

        counts = link_files(args.roster, args.records, args.out, threshold=args.threshold)
        print(f"linked {counts['linked']} of {counts['records']} records; wrote {args.out}")
        return 0
    if args.command == "keys":
        from tfp.keys import generate_keys

        for line in generate_keys(args.out):
            print(line)
        return 0
    if args.command == "db":
        return _db_upgrade(args.config, args.user, args.password_env)
    if args.command == "review":
        return _review(args)
    if args.command == "verify-delivery":
        from tfp.verify import verify_delivery

        return verify_delivery(args.dir, args.signing_public_key, args.age_identity, args.out,
                               args.identifiers_identity)
    raise AssertionError(args.command)


def _review(args: argparse.Namespace) -> int:
    """`tfp review export` / `tfp review import`: counts and paths on the console, never a value."""
    from tfp.config import load_config, warehouse_url
    from tfp.review import export_queue, import_decisions
    from tfp.warehouse import connect

    config = load_config(args.config)
    engine = connect(warehouse_url(config))
    if args.review_command == "export":
        rows = export_queue(engine, args.date, args.out, args.recipient or config.linkage.review_recipient)
        print(f"{rows} review pairs of {args.date} written age-encrypted to {args.out}")
        return 0
    outcome = import_decisions(engine, args.file, args.identity)
    print(f"{outcome.recorded} decisions recorded, {outcome.already} recorded before, "
          f"{outcome.undecided} rows left undecided")
    return 0


def _db_upgrade(config_path: Path, user: str | None, password_env: str | None) -> int:
    """`tfp db upgrade`: migrate the config's warehouse, optionally as another role (its owner)."""
    from sqlalchemy.engine import make_url

    from tfp.config import ConfigError, load_config, read_secret, warehouse_url
    from tfp.warehouse import upgrade

    config = load_config(config_path)
    url = make_url(warehouse_url(config) if not (user or password_env) else config.warehouse_url)
    if user:
        url = url.set(username=user)
    if password_env:
        import tfp_airflow

        tfp_airflow.install()  # the password may be an Airflow Variable; Airflow is imported only to look it up
        password = read_secret(password_env)
        if not password:
            raise ConfigError(f"the password is missing: set the environment variable or Airflow Variable {password_env}")
        url = url.set(password=password)
    for line in upgrade(url.render_as_string(hide_password=False)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
