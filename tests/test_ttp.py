"""The identifiers file for the trusted third party (contract section 10, issue 19 item 3), built from a real
warehouse (SQLite and PostgreSQL) and packaged: every submitted person's roster identifiers, sorted by
person_token, sealed to the linkage function's own age recipient, listed in the manifest, and never written in
plaintext anywhere."""

from __future__ import annotations

import base64
import csv
import io
import json

import pyrage
import pytest
from test_anonymise import PEOPLE, R, config, warehouse  # noqa: F401  (warehouse is a fixture)

from tfp import package as package_module
from tfp.anonymise import build_outputs, person_token
from tfp.config import load_keys
from tfp.consent import compute_consent
from tfp.fsmodes import atomic_write as real_atomic_write
from tfp.package import PackageTarget, packaged_files, write_package
from tfp.ttp import IDENTIFIER_COLUMNS, IdentifiersCsv, build_identifiers, identifiers_name

LA = "E09000031"
NAME = identifiers_name(LA, R)
SUBMITTED = ("PA", "PD", *(f"PK{i}" for i in range(6)))  # test_anonymise: kept members of submitted families
# values of the roster that must never be found outside the warehouse and the sealed file
PERSONAL = ("Zoë", "O'Neil", "SW1A 1AA", "AB123456C", "100023336956", "1982-04-02", "Smith-Jones", "SE15 4QF",
            "KitA")


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture
def night(warehouse, tmp_path, keys_env):  # noqa: F811
    compute_consent(warehouse, R, "consent")
    keys = load_keys(config(tmp_path))
    outputs = build_outputs(warehouse, R, config(tmp_path), keys)
    return warehouse, keys, outputs


def test_every_submitted_person_with_the_roster_values_sorted_by_token(night):
    engine, keys, outputs = night
    ids = build_identifiers(engine, R, outputs.released, keys.pseudonym)
    rows = parse(ids.text)
    assert ids.text.startswith(",".join(IDENTIFIER_COLUMNS) + "\n") and "\r" not in ids.text
    assert ids.rows == len(rows) == outputs.submission_rows == 8
    assert {r["person_token"] for r in rows} == {person_token(keys.pseudonym, p) for p in SUBMITTED}
    assert {r["person_token"] for r in rows} == {r["person_token"] for r in parse(outputs.submission)}
    assert [r["person_token"] for r in rows] == sorted(r["person_token"] for r in rows)
    by_token = {r["person_token"]: r for r in rows}
    assert by_token[person_token(keys.pseudonym, "PA")] == {
        "person_token": person_token(keys.pseudonym, "PA"), "forename": "Zoë", "surname": "O'Neil",
        "date_of_birth": "1982-04-02", "sex": "F", "postcode": "SW1A 1AA", "uprn": "100023336956",
        "nino": "AB123456C", "upn": "", "nhs_number": ""}  # the roster has no nhs_number column yet
    pk0 = by_token[person_token(keys.pseudonym, "PK0")]
    assert (pk0["forename"], pk0["date_of_birth"], pk0["nino"], pk0["upn"]) == ("KitA", "2010-01-01", "", "")
    # people not submitted (refused, withdrawn, of a family neither eligible nor intervention) are not there
    for ref in ("PB", "PC", "PE", "PG", "PH"):
        forename, dob = PEOPLE[ref][2], PEOPLE[ref][4]
        assert f",{forename}," not in ids.text and dob.isoformat() not in ids.text, ref
        assert person_token(keys.pseudonym, ref) not in ids.text
    # what a log line or traceback would show of it
    assert repr(ids) == str(ids) == "IdentifiersCsv(<8 rows, not shown>)"


def test_a_submitted_person_missing_from_the_roster_fails_naming_counts_only(night):
    engine, keys, outputs = night
    with pytest.raises(RuntimeError) as info:
        build_identifiers(engine, R, [*outputs.released, "PZ-unknown"], keys.pseudonym)
    assert "1 of the 9 submitted people" in str(info.value) and "PZ" not in str(info.value)


def _targets(tmp_path, keys, identifiers: bool = True):
    analysts, linkage = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    target = PackageTarget(tmp_path / "outbox", LA, R, "age", str(analysts.to_public()), keys.signing, "0.1.0",
                           identifiers_recipient=str(linkage.to_public()) if identifiers else None)
    return target, analysts, linkage


def test_packaged_sealed_to_its_own_recipient_listed_and_never_in_plaintext(night, tmp_path, monkeypatch):
    engine, keys, outputs = night
    written: list[bytes] = []

    def spy(path, data, *args, **kwargs):  # every byte package writes to disk goes through here
        written.append(bytes(data))
        return real_atomic_write(path, data, *args, **kwargs)

    monkeypatch.setattr(package_module, "atomic_write", spy)
    ids = build_identifiers(engine, R, outputs.released, keys.pseudonym)
    target, analysts, linkage = _targets(tmp_path, keys)
    files = write_package(outputs, target, ids)
    folder = tmp_path / "outbox" / R.isoformat()

    assert [f.name for f in files][4] == NAME  # after the four CSVs, before the manifest
    manifest = json.loads((folder / f"tfp_manifest_{LA}_20250331.json").read_bytes())
    entry = next(e for e in manifest["files"] if e["name"] == NAME)
    data = (folder / NAME).read_bytes()
    assert entry["rows"] == 8 and entry["bytes"] == len(data)
    # the linkage function's key opens it; the analysts' key does not
    assert pyrage.decrypt(data, [linkage]).decode("utf-8") == ids.text
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(data, [analysts])
    # and the other way round for every attribute file
    for f in files[:3]:
        pyrage.decrypt(f.path.read_bytes(), [analysts])
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt(f.path.read_bytes(), [linkage])
    # no plaintext: not in any byte written, not in any file of the outbox (state file, manifest, ciphertexts)
    assert written and all(value.encode() not in blob for blob in written for value in PERSONAL)
    for path in (tmp_path / "outbox").rglob("*"):
        if path.is_file():
            assert not any(value.encode() in path.read_bytes() for value in PERSONAL), path.name
    assert sorted(p.name for p in folder.iterdir()) == sorted([*(f.name for f in files), ".package_state.json"])
    # deliver reads it back, checked against the signed manifest and the state
    back = packaged_files(tmp_path / "outbox", LA, R, keys.signing)
    assert [f.name for f in back] == [f.name for f in files]
    assert next(f for f in back if f.name == NAME).plaintext_sha256 == files[4].plaintext_sha256


def test_a_rerun_reuses_the_ciphertext_and_turning_it_off_removes_it(night, tmp_path):
    engine, keys, outputs = night
    ids = build_identifiers(engine, R, outputs.released, keys.pseudonym)
    target, _, _ = _targets(tmp_path, keys)
    folder = tmp_path / "outbox" / R.isoformat()
    write_package(outputs, target, ids)
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    write_package(outputs, target, build_identifiers(engine, R, outputs.released, keys.pseudonym))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first  # same bytes: nothing to upload again

    off = PackageTarget(target.outbox, LA, R, "age", target.recipient, keys.signing, "0.1.0")
    files = write_package(outputs, off)
    assert not (folder / NAME).exists()
    assert NAME not in [f.name for f in files]
    assert NAME not in (folder / f"tfp_manifest_{LA}_20250331.json").read_text()
    # off, the package is the package written without the option at all: same names, same plaintexts
    plain_names = [f.name for f in files]
    assert plain_names == [f"tfp_submission_{LA}_20250331.csv.age", f"tfp_summary_{LA}_20250331.csv.age",
                           f"tfp_withdrawals_{LA}_20250331.csv.age", f"tfp_progress_{LA}_20250331.csv.age",
                           f"tfp_manifest_{LA}_20250331.json",
                           f"tfp_manifest_{LA}_20250331.json.sig"]


def test_package_refuses_identifiers_it_cannot_seal_apart(night, tmp_path):
    _, keys, outputs = night
    target, _, _ = _targets(tmp_path, keys)
    ids = IdentifiersCsv("person_token\n", 0)
    with pytest.raises(ValueError, match="no identifiers were built"):
        write_package(outputs, target)
    same = PackageTarget(target.outbox, LA, R, "age", target.recipient, keys.signing, "0.1.0",
                         identifiers_recipient=target.recipient)
    with pytest.raises(ValueError, match="a recipient of its own"):
        write_package(outputs, same, ids)
    plain = PackageTarget(target.outbox, LA, R, "none", None, keys.signing, "0.1.0",
                          identifiers_recipient=target.identifiers_recipient)
    with pytest.raises(ValueError, match="needs encryption age"):
        write_package(outputs, plain, ids)
    assert not any((target.outbox / R.isoformat()).glob("tfp_identifiers_*"))


def test_the_package_task_adds_the_file_only_when_the_config_asks(tmp_path, night):
    """package.run with a config whose delivery.identifiers is set, through PackageTarget.of."""
    engine, keys, _ = night
    from tfp.config import parse_config
    from tfp.context import RunContext
    from tfp.package import run

    linkage = pyrage.x25519.Identity.generate()
    analysts = pyrage.x25519.Identity.generate()
    base = config(tmp_path).model_dump(mode="json")
    base["delivery"] = {"transport": "directory", "path": "out", "encryption": "age",
                        "recipient": str(analysts.to_public()),
                        "identifiers": {"recipient": str(linkage.to_public())}}
    on = parse_config(base, tmp_path)

    result = run(RunContext(config=on, reference_date=R, warehouse=engine))
    assert NAME in result.files and result.counts["identifiers"] == result.counts["persons_submitted"] == 8
    xcom = json.dumps(result.to_xcom())
    assert not any(value in xcom for value in PERSONAL)
    sealed = (on.outbox_dir / R.isoformat() / NAME).read_bytes()
    assert len(parse(pyrage.decrypt(sealed, [linkage]).decode())) == 8
    assert base64.b64encode(sealed)  # a ciphertext, not text

    del base["delivery"]["identifiers"]
    result = run(RunContext(config=parse_config(base, tmp_path), reference_date=R, warehouse=engine))
    assert NAME not in result.files and "identifiers" not in result.counts


def test_retention_deletes_the_outbox_copy_like_any_other(night, tmp_path):
    """The programme-end purge counts the sealed file with the outbox's other files and deletes it."""
    from tfp.retention import run_category

    engine, keys, outputs = night
    cfg = config(tmp_path)
    ids = build_identifiers(engine, R, outputs.released, keys.pseudonym)
    target, _, _ = _targets(tmp_path, keys)
    target = PackageTarget(cfg.outbox_dir, LA, R, "age", target.recipient, keys.signing, "0.1.0",
                           identifiers_recipient=target.identifiers_recipient)
    files = write_package(outputs, target, ids)
    sealed = cfg.outbox_dir / R.isoformat() / NAME
    assert sealed.is_file() and len(files) == 7
    end = cfg.retention.delete_all_after
    dry = run_category(engine, cfg, "programme_end", end, dry_run=True)
    without = dry.found
    assert sealed.is_file()
    sealed.unlink()  # one file fewer in the outbox: one fewer found, so it was counted
    assert run_category(engine, cfg, "programme_end", end, dry_run=True).found == without - 1
    write_package(outputs, target, ids)
    done = run_category(engine, cfg, "programme_end", end, dry_run=False)
    assert done.deleted == without and not sealed.exists() and not any(cfg.outbox_dir.rglob("*"))


def test_turned_off_after_a_delivery_the_sealed_file_leaves_the_destination_too(night, tmp_path, capsys):
    """A night delivered with identifiers, then re-run with the option off (the arrangement with the trusted
    third party ended): the new package has no identifiers file, and the destination must not keep the old
    one either: it would stay in the analysts' folder, listed by no manifest, and fail their verify."""
    from tfp.deliver import deliver
    from tfp.verify import verify_delivery

    engine, keys, outputs = night
    target, analysts, _ = _targets(tmp_path, keys)
    dest = tmp_path / "ons"
    dest.mkdir()
    (dest / "notes.txt").write_text("the recipient's own file\n")  # not tfp's: left alone
    files = write_package(outputs, target, build_identifiers(engine, R, outputs.released, keys.pseudonym))
    deliver(files, transport="directory", path=str(dest), conn_id=None, engine=engine, reference_date=R)
    assert (dest / NAME).is_file()
    other_day = dest / f"tfp_identifiers_{LA}_20250228.csv.age"  # another night's delivery: not this one's to touch
    other_day.write_bytes(b"age-encryption.org/v1 another night")
    off = PackageTarget(target.outbox, LA, R, "age", target.recipient, keys.signing, "0.1.0")
    counts = deliver(write_package(outputs, off), transport="directory", path=str(dest), conn_id=None,
                     engine=engine, reference_date=R)
    assert not (dest / NAME).exists()
    assert counts["removed"] == 1
    assert other_day.is_file() and (dest / "notes.txt").is_file()
    other_day.unlink()
    pub = tmp_path / "signing.pub"
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub.write_text(base64.b64encode(Ed25519PrivateKey.from_private_bytes(keys.signing).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)).decode())
    capsys.readouterr()
    assert verify_delivery(dest, pub) == 0, capsys.readouterr().out
