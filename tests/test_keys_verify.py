"""`tfp keys` and `tfp verify-delivery`: new keys are written safely and never shown; the recipient's
check accepts a good delivery and names the file of every kind of damage."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import stat
from datetime import date
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import make_keys
from tfp.anonymise import Outputs
from tfp.cli import main
from tfp.config import ConfigError
from tfp.keys import KeysExistError, generate_keys
from tfp.package import PackageTarget, canonical_json, sign, write_package
from tfp.verify import manifest_problems, verify_delivery

R = date(2025, 3, 31)
LA = "E09000031"
SUBMISSION = f"tfp_submission_{LA}_20250331.csv"
SUMMARY = f"tfp_summary_{LA}_20250331.csv"
MANIFEST = f"tfp_manifest_{LA}_20250331.json"

OUTPUTS = Outputs(
    submission="reference_date,la_code,person_token\n2025-03-31,E09000031,\"multi\nline\"\n2025-03-31,E09000031,b\n",
    summary="measure,programme_status,count\nfamilies_assessed,all,[c]\n",
    withdrawals="person_token,withdrawn_on\n",
    submission_rows=2, summary_rows=1, withdrawal_rows=0,
)


# -- keys ------------------------------------------------------------------------------------------

def test_generate_keys_writes_six_usable_files_with_tight_modes(tmp_path):
    out = tmp_path / "keys"
    lines = generate_keys(out)
    files = {p.name: p for p in out.iterdir()}
    assert set(files) == {"pseudonym.key", "linkage.key", "signing.key", "signing.pub", "age.key", "age.pub"}
    modes = {name: stat.S_IMODE(p.stat().st_mode) for name, p in files.items()}
    assert modes == {"pseudonym.key": 0o600, "linkage.key": 0o600, "signing.key": 0o600, "age.key": 0o600,
                     "signing.pub": 0o644, "age.pub": 0o644}

    text = {name: p.read_text().strip() for name, p in files.items()}
    assert re.fullmatch(r"[0-9a-f]{64}", text["pseudonym.key"])
    assert re.fullmatch(r"[0-9a-f]{64}", text["linkage.key"])
    assert text["pseudonym.key"] != text["linkage.key"]
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text["signing.key"], validate=True))
    public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert base64.b64decode(text["signing.pub"], validate=True) == public_raw
    secret_line = next(line for line in text["age.key"].splitlines() if line.startswith("AGE-SECRET-KEY-"))
    identity = pyrage.x25519.Identity.from_str(secret_line)
    assert str(identity.to_public()) == text["age.pub"]

    said = "\n".join(lines)
    for secret in (text["pseudonym.key"], text["linkage.key"], text["signing.key"], secret_line):
        assert secret not in said
    for variable in ("TFP_PSEUDONYM_KEY", "TFP_LINKAGE_KEY", "TFP_SIGNING_KEY"):
        assert variable in said


def test_generate_keys_modes_do_not_depend_on_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        generate_keys(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "signing.pub").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "age.pub").stat().st_mode) == 0o644


def test_a_keys_folder_it_makes_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        generate_keys(tmp_path / "new" / "keys")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_generate_keys_refuses_to_overwrite(tmp_path):
    generate_keys(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(KeysExistError) as caught:
        generate_keys(tmp_path)
    assert isinstance(caught.value, ConfigError) and "pseudonym.key" in str(caught.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    lonely = tmp_path / "other"
    lonely.mkdir()
    (lonely / "age.pub").write_text("mine\n")
    with pytest.raises(KeysExistError):
        generate_keys(lonely)
    assert [p.name for p in lonely.iterdir()] == ["age.pub"]  # nothing written beside it


def test_cli_keys(tmp_path, capsys):
    assert main(["keys", "--out", str(tmp_path / "k")]) == 0
    assert "signing.pub" in capsys.readouterr().out
    assert main(["keys", "--out", str(tmp_path / "k")]) == 2  # refused, with a message, no traceback
    assert "refusing to overwrite" in capsys.readouterr().err


# -- verify-delivery -------------------------------------------------------------------------------

@pytest.fixture
def delivery(tmp_path, keys_env):
    """An age-encrypted package signed with the test's signing key, the public key file and the identity file."""
    signing = base64.b64decode(keys_env["TFP_SIGNING_KEY"])
    public = Ed25519PrivateKey.from_private_bytes(signing).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pub_file = tmp_path / "signing.pub"
    pub_file.write_text(base64.b64encode(public).decode() + "\n")
    identity = pyrage.x25519.Identity.generate()
    id_file = tmp_path / "age.key"
    id_file.write_text(f"# public key: {identity.to_public()}\n{identity}\n")
    write_package(OUTPUTS, PackageTarget(tmp_path / "outbox", LA, R, "age", str(identity.to_public()), signing, "0.1.0"))
    return tmp_path / "outbox" / "2025-03-31", pub_file, id_file


def run(delivery, capsys, **kwargs) -> tuple[int, str]:
    folder, pub, identity = delivery
    code = verify_delivery(folder, pub, kwargs.get("identity", identity), kwargs.get("out"))
    return code, capsys.readouterr().out


def test_a_good_delivery_verifies_and_decrypts(delivery, capsys, tmp_path):
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 0, said
    assert said.count("OK ") == 5  # the manifest and four files (the progress file has no row here)
    assert f"OK {SUBMISSION}.age (2 rows" in said
    assert (tmp_path / "plain" / SUBMISSION).read_text() == OUTPUTS.submission
    assert (tmp_path / "plain" / SUMMARY).read_bytes() == OUTPUTS.summary.encode()


def test_default_out_and_without_identity(delivery, capsys):
    folder = delivery[0]
    code, _ = run(delivery, capsys)
    assert code == 0 and (folder / "decrypted" / SUBMISSION).is_file()
    code, said = run(delivery, capsys, identity=None)
    assert code == 0 and "not decrypted" in said


def test_a_plain_delivery_verifies(tmp_path, keys_env, delivery, capsys):
    signing = base64.b64decode(keys_env["TFP_SIGNING_KEY"])
    write_package(OUTPUTS, PackageTarget(tmp_path / "plain_outbox", LA, R, "none", None, signing, "0.1.0"))
    code = verify_delivery(tmp_path / "plain_outbox" / "2025-03-31", delivery[1], None, None)
    said = capsys.readouterr().out
    assert code == 0, said
    assert f"OK {SUBMISSION} (2 rows)" in said


def test_cli_verify_delivery(delivery, capsys):
    folder, pub, identity = delivery
    assert main(["verify-delivery", str(folder), "--signing-public-key", str(pub), "--age-identity", str(identity)]) == 0
    (folder / (SUBMISSION + ".age")).unlink()
    assert main(["verify-delivery", str(folder), "--signing-public-key", str(pub)]) == 1
    assert f"MISSING {SUBMISSION}.age" in capsys.readouterr().out


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip_csv", "truncate_csv", "alter_manifest", "alter_sig", "drop_file",
                                    "drop_sig"])
def test_any_damage_fails_naming_the_file(delivery, capsys, damage):
    folder = delivery[0]
    target = {"flip_csv": SUBMISSION + ".age", "truncate_csv": SUMMARY + ".age", "alter_manifest": MANIFEST,
              "alter_sig": MANIFEST + ".sig", "drop_file": SUMMARY + ".age", "drop_sig": MANIFEST + ".sig"}[damage]
    path = folder / target
    if damage == "flip_csv":
        flip_byte(path, len(path.read_bytes()) // 2)
    elif damage == "truncate_csv":
        path.write_bytes(path.read_bytes()[:-16])
    elif damage == "alter_manifest":
        path.write_bytes(path.read_bytes().replace(b'"rows":2', b'"rows":3'))
    elif damage == "alter_sig":
        sig = bytearray(base64.b64decode(path.read_bytes()))
        sig[0] ^= 0x01
        path.write_bytes(base64.b64encode(bytes(sig)))
    else:
        path.unlink()
    code, said = run(delivery, capsys)
    assert code == 1
    if damage == "truncate_csv":
        assert f"FAIL {SUMMARY}.age: " in said and "truncated" in said
    problem_lines = [line for line in said.splitlines() if not line.startswith("OK ")]
    assert any(target in line for line in problem_lines), said


def test_a_plaintext_csv_changed_after_signing_fails(tmp_path, keys_env, delivery, capsys):
    signing = base64.b64decode(keys_env["TFP_SIGNING_KEY"])
    write_package(OUTPUTS, PackageTarget(tmp_path / "plain_outbox", LA, R, "none", None, signing, "0.1.0"))
    folder = tmp_path / "plain_outbox" / "2025-03-31"
    flip_byte(folder / SUBMISSION, 3)
    assert verify_delivery(folder, delivery[1], None, None) == 1
    assert f"FAIL {SUBMISSION}" in capsys.readouterr().out


def test_a_row_count_that_differs_from_the_signed_manifest_fails(tmp_path, keys_env, delivery, capsys):
    signing = base64.b64decode(keys_env["TFP_SIGNING_KEY"])
    wrong = dataclasses.replace(OUTPUTS, summary_rows=4)  # the sender signed a wrong count
    write_package(wrong, PackageTarget(tmp_path / "wrong", LA, R, "none", None, signing, "0.1.0"))
    assert verify_delivery(tmp_path / "wrong" / "2025-03-31", delivery[1], None, None) == 1
    assert f"FAIL {SUMMARY}: 1 rows, the manifest says 4" in capsys.readouterr().out


def test_a_foreign_public_key_or_identity_fails(delivery, capsys, tmp_path):
    folder, _, identity = delivery
    stranger = tmp_path / "stranger.pub"
    stranger.write_text(base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)).decode())
    assert verify_delivery(folder, stranger, identity, None) == 1
    assert f"BAD SIGNATURE {MANIFEST}" in capsys.readouterr().out

    other = tmp_path / "other.key"
    other.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    assert verify_delivery(folder, delivery[1], other, None) == 1
    assert "cannot be decrypted" in capsys.readouterr().out

    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not base64!")
    assert verify_delivery(folder, garbage, identity, None) == 1


def test_an_empty_folder_fails(tmp_path, delivery, capsys):
    (tmp_path / "empty").mkdir()
    assert verify_delivery(tmp_path / "empty", delivery[1], None, None) == 1
    assert "no tfp_manifest" in capsys.readouterr().out


# -- names, replays, coverage (issue 13 item 6; contract section 10, Verify) ----------------------

YESTERDAY = date(2025, 3, 30)
OTHER_LA = "E09000032"


def signing_key(keys_env) -> bytes:
    return base64.b64decode(keys_env["TFP_SIGNING_KEY"])


def recipient_of(id_file: Path) -> str:
    line = next(x for x in id_file.read_text().splitlines() if x.startswith("AGE-SECRET-KEY-"))
    return str(pyrage.x25519.Identity.from_str(line).to_public())


def write_signed(folder: Path, name: str, manifest: dict, key: bytes) -> None:
    """A manifest the sender really signed (its key), under any name: what a replay or a bug would produce."""
    data = canonical_json(manifest)
    (folder / name).write_bytes(data)
    (folder / (name + ".sig")).write_bytes(sign(data, key))


def manifest_of(folder: Path, name: str = MANIFEST) -> dict:
    return json.loads((folder / name).read_bytes())


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a folder): to show that nothing was written."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("renamed", ["manifest_only", "everything"])
def test_yesterdays_delivery_renamed_to_todays_names_fails(tmp_path, keys_env, delivery, capsys, renamed):
    """A replay: yesterday's genuine, signed delivery put where today's is expected. Renaming only the
    manifest and its signature used to verify OK (its files are still there under yesterday's names)."""
    _, pub, identity = delivery
    write_package(OUTPUTS, PackageTarget(tmp_path / "old", LA, YESTERDAY, "age", recipient_of(identity), signing_key(keys_env), "0.1.0"))
    today = tmp_path / "today"
    today.mkdir()
    for path in (tmp_path / "old" / "2025-03-30").glob("tfp_*"):
        name = path.name if renamed == "manifest_only" and "manifest" not in path.name else \
            path.name.replace("20250330", "20250331")
        (today / name).write_bytes(path.read_bytes())
    code, said = run((today, pub, identity), capsys, out=tmp_path / "plain")
    assert code == 1, said
    assert (f"NAME MISMATCH {MANIFEST}: its signed la_code {LA} and reference_date 2025-03-30 make it "
            f"tfp_manifest_{LA}_20250330.json") in said
    assert not (tmp_path / "plain").exists()  # nothing of a manifest that failed is acted on
    if renamed == "everything":
        assert f"NOT COVERED {SUBMISSION}.age" in said


def test_a_manifest_whose_la_code_differs_from_its_file_name_fails(tmp_path, keys_env, delivery, capsys):
    folder, pub, identity = delivery
    manifest = manifest_of(folder)
    write_signed(folder, MANIFEST, {**manifest, "la_code": OTHER_LA}, signing_key(keys_env))
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 1, said
    assert f"NAME MISMATCH {MANIFEST}: its signed la_code {OTHER_LA} and reference_date 2025-03-31" in said
    assert f"NAME MISMATCH {MANIFEST}: lists {SUBMISSION}.age, which is not tfp_<kind>_{OTHER_LA}_20250331" in said
    assert not (tmp_path / "plain").exists()


@pytest.mark.parametrize("listed", [f"tfp_submission_{OTHER_LA}_20250331.csv.age",
                                    f"tfp_submission_{LA}_20250330.csv.age",
                                    f"tfp_manifest_{LA}_20250331.csv.age",
                                    f"tfp_submission_{LA}_20250331.json"])
def test_a_manifest_listing_a_name_of_another_la_date_or_shape_fails(tmp_path, keys_env, delivery, capsys, listed):
    """The manifest's own name, la_code and date agree; one file it lists does not."""
    folder = delivery[0]
    (folder / (SUBMISSION + ".age")).rename(folder / listed)
    manifest = manifest_of(folder)
    for entry in manifest["files"]:
        if entry["name"] == SUBMISSION + ".age":
            entry["name"] = listed
    write_signed(folder, MANIFEST, manifest, signing_key(keys_env))
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 1, said
    assert f"NAME MISMATCH {MANIFEST}: lists {listed}, which is not tfp_<kind>_{LA}_20250331.csv[.age]" in said
    assert f"NOT COVERED {listed}" in said
    assert not (tmp_path / "plain").exists()


@pytest.mark.parametrize("stray", [f"tfp_submission_{LA}_20250331.csv", f"tfp_progress_{LA}_20250331.csv",
                                   f"tfp_identifiers_{LA}_20250331.csv.age", f"tfp_submission_{LA}_20250330.csv.age",
                                   f"tfp_manifest_{LA}_20250330.json.sig", "tfp_notes"])
def test_an_unsigned_tfp_file_beside_a_valid_delivery_fails_naming_it(tmp_path, delivery, capsys, stray):
    folder = delivery[0]
    (folder / stray).write_bytes(b"reference_date,la_code,person_token\n2025-03-31,E09000031,zzz\n")
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 1, said
    assert f"NOT COVERED {stray}: no manifest that verifies lists it" in said
    assert "zzz" not in said  # names, never contents
    assert said.count("OK ") == 5  # the genuine files still verify


def test_a_tfp_folder_beside_a_delivery_fails(tmp_path, delivery, capsys):
    (delivery[0] / "tfp_more").mkdir()
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 1 and "NOT COVERED tfp_more" in said


@pytest.mark.parametrize("where", ["parent", "absolute", "subfolder", "backslash", "dotdot"])
def test_a_manifest_listing_a_path_fails_and_writes_nothing(tmp_path, keys_env, delivery, capsys, where):
    """A name with a path is refused before anything is read or decrypted. (For "absolute" a path under
    tmp_path stands for /etc/x, so that the test, reverted, cannot write into /etc.)"""
    folder = delivery[0]
    out = tmp_path / "plain"
    (out / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    listed = {"parent": f"../{SUBMISSION}.age", "absolute": f"{tmp_path}/elsewhere/{SUBMISSION}.age",
              "subfolder": f"sub/{SUBMISSION}.age", "backslash": f"..\\{SUBMISSION}.age", "dotdot": ".."}[where]
    if where == "backslash":
        (folder / listed).write_bytes((folder / (SUBMISSION + ".age")).read_bytes())
    manifest = manifest_of(folder)
    for entry in manifest["files"]:
        if entry["name"] == SUBMISSION + ".age":
            entry["name"] = listed
    write_signed(folder, MANIFEST, manifest, signing_key(keys_env))
    before = tree(tmp_path)
    code, said = run(delivery, capsys, out=out)
    assert code == 1, said
    assert f"BAD NAME {MANIFEST}: lists {listed if where != 'backslash' else ascii(listed)}, a path" in said
    assert tree(tmp_path) == before  # nothing written, inside --out or outside


def test_an_unsigned_manifest_is_not_acted_on(tmp_path, keys_env, delivery, capsys):
    """Signed by someone else and listing a path: refused on the signature alone; its names are not even
    looked at, nothing is decrypted, and the files it lists are not covered."""
    folder = delivery[0]
    manifest = manifest_of(folder)
    for entry in manifest["files"]:
        if entry["name"] == SUBMISSION + ".age":
            entry["name"] = f"../{SUBMISSION}.age"
    write_signed(folder, MANIFEST, manifest, base64.b64decode(make_keys()["TFP_SIGNING_KEY"]))
    before = tree(tmp_path)
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 1
    assert f"BAD SIGNATURE {MANIFEST}" in said and "BAD NAME" not in said
    assert f"NOT COVERED {SUMMARY}.age" in said
    assert tree(tmp_path) == before


@pytest.mark.parametrize("second", ["another_date", "another_la"])
def test_two_valid_deliveries_in_one_folder_verify_each_with_its_own_manifest(tmp_path, keys_env, delivery, capsys,
                                                                               second):
    folder, pub, identity = delivery
    la, on = (LA, YESTERDAY) if second == "another_date" else (OTHER_LA, R)
    write_package(OUTPUTS, PackageTarget(tmp_path / "other", la, on, "age", recipient_of(identity), signing_key(keys_env), "0.1.0"))
    for path in (tmp_path / "other" / on.isoformat()).glob("tfp_*"):
        (folder / path.name).write_bytes(path.read_bytes())
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 0, said
    assert said.count("OK ") == 10  # per delivery: the manifest and four files
    stamp = on.strftime("%Y%m%d")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == sorted(
        [SUBMISSION, SUMMARY, f"tfp_withdrawals_{LA}_20250331.csv", f"tfp_progress_{LA}_20250331.csv",
         f"tfp_submission_{la}_{stamp}.csv", f"tfp_summary_{la}_{stamp}.csv", f"tfp_withdrawals_{la}_{stamp}.csv",
         f"tfp_progress_{la}_{stamp}.csv"])


def test_a_non_tfp_file_is_listed_as_ignored_and_does_not_fail(tmp_path, delivery, capsys):
    (delivery[0] / "README.txt").write_text("from the SFTP admin\n")
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 0, said
    assert "IGNORED README.txt: not a tfp_* file, not checked" in said
    assert "from the SFTP admin" not in said


def test_out_as_the_delivery_folder_is_refused(delivery, capsys):
    code, said = run(delivery, capsys, out=delivery[0])
    assert code == 1 and "is the delivery folder itself" in said
    assert not (delivery[0] / SUBMISSION).exists()


def test_decrypted_files_replace_a_planted_link_and_are_private(tmp_path, delivery, capsys):
    """A symbolic link planted in --out under a decrypted file's name is replaced, not written through;
    --out is made 0700 and each decrypted file 0600, whatever the umask."""
    out = tmp_path / "plain"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    old = os.umask(0o022)
    try:
        code, said = run(delivery, capsys, out=out)
        assert code == 0, said
        assert stat.S_IMODE(out.stat().st_mode) == 0o700
        assert stat.S_IMODE((out / SUBMISSION).stat().st_mode) == 0o600
        (out / SUBMISSION).unlink()
        (out / SUBMISSION).symlink_to(victim)
        code, said = run(delivery, capsys, out=out)
    finally:
        os.umask(old)
    assert code == 0, said
    assert victim.read_text() == "keep me\n"
    assert not (out / SUBMISSION).is_symlink() and (out / SUBMISSION).read_text() == OUTPUTS.submission


def test_an_encrypted_file_whose_rows_differ_is_not_written_out(tmp_path, keys_env, delivery, capsys):
    _, pub, identity = delivery
    wrong = dataclasses.replace(OUTPUTS, summary_rows=4)
    write_package(wrong, PackageTarget(tmp_path / "wrong", LA, R, "age", recipient_of(identity), signing_key(keys_env), "0.1.0"))
    code, said = run((tmp_path / "wrong" / "2025-03-31", pub, identity), capsys, out=tmp_path / "plain")
    assert code == 1 and f"FAIL {SUMMARY}.age: 1 rows, the manifest says 4" in said
    assert not (tmp_path / "plain" / SUMMARY).exists()
    assert (tmp_path / "plain" / SUBMISSION).is_file()  # a file that verified is still decrypted


def test_a_new_kind_of_file_listed_by_the_manifest_verifies_without_changing_verify(tmp_path, keys_env, delivery,
                                                                                     capsys):
    """The check follows the manifest and the name pattern, not a fixed list: a signed manifest that also
    lists the progress CSV (contract section 10) verifies, and that file is covered."""
    folder = delivery[0]
    progress = f"tfp_progress_{LA}_20250331.csv"
    data = b"family_token,programme_status\nf1,intervention\n"
    (folder / progress).write_bytes(data)
    manifest = manifest_of(folder)
    manifest["files"].append({"bytes": len(data), "name": progress, "rows": 1,
                              "sha256": hashlib.sha256(data).hexdigest()})
    write_signed(folder, MANIFEST, manifest, signing_key(keys_env))
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 0, said
    assert f"OK {progress} (1 rows)" in said and "NOT COVERED" not in said


@pytest.mark.parametrize("change", [{"la_code": "../E09000031"}, {"la_code": "e09000031"},
                                    {"reference_date": "2025-02-30"}, {"reference_date": "20250331"},
                                    {"files": "all"}],
                         ids=["la_code_path", "la_code_lower", "impossible_date", "date_format", "files_not_list"])
def test_a_signed_manifest_of_the_wrong_shape_is_not_acted_on(tmp_path, keys_env, delivery, capsys, change):
    folder = delivery[0]
    write_signed(folder, MANIFEST, {**manifest_of(folder), **change}, signing_key(keys_env))
    code, said = run(delivery, capsys, out=tmp_path / "plain")
    assert code == 1 and f"BAD MANIFEST {MANIFEST}: not a manifest this tool understands" in said
    assert not (tmp_path / "plain").exists()


def test_the_sender_can_check_its_own_manifest_with_the_same_rules(delivery):
    folder = delivery[0]
    assert manifest_problems(MANIFEST, manifest_of(folder)) == []
    assert manifest_problems(f"tfp_manifest_{LA}_20250330.json", manifest_of(folder)) != []


# -- the identifiers file for the trusted third party (contract section 10, issue 19 item 3) -------------------

IDENTIFIERS = f"tfp_identifiers_{LA}_20250331.csv.age"
IDENTIFIERS_TEXT = ("person_token,forename,surname,date_of_birth,sex,postcode,uprn,nino,upn,nhs_number\n"
                    "b,Zoë,O'Neil,1982-04-02,F,SW1A 1AA,100023336956,AB123456C,,\n"
                    "multi,Bob,\"Smith, Jr\",1980-01-09,M,N1 9GU,,,,9434765919\n")


@pytest.fixture
def sealed(tmp_path, delivery):
    """The delivery fixture's package again, now with the identifiers file sealed to a second identity (the
    trusted third party's linkage function) beside the analysts' (``delivery``'s) identity."""
    from tfp.ttp import IdentifiersCsv

    folder, pub, analysts = delivery
    linkage = pyrage.x25519.Identity.generate()
    linkage_file = tmp_path / "linkage.key"
    linkage_file.write_text(f"# public key: {linkage.to_public()}\n{linkage}\n")
    signing = base64.b64decode(os.environ["TFP_SIGNING_KEY"])
    write_package(OUTPUTS, PackageTarget(tmp_path / "outbox", LA, R, "age", recipient_of(analysts), signing, "0.1.0",
                                         identifiers_recipient=str(linkage.to_public())),
                  IdentifiersCsv(IDENTIFIERS_TEXT, 2))
    return folder, pub, analysts, linkage_file


def test_identifiers_are_listed_and_checked_without_a_key_and_never_opened_with_the_analysts_key(sealed, capsys,
                                                                                                  tmp_path):
    folder, pub, analysts, _ = sealed
    entry = next(e for e in manifest_of(folder)["files"] if e["name"] == IDENTIFIERS)
    assert entry["rows"] == 2 and entry["sha256"] == hashlib.sha256((folder / IDENTIFIERS).read_bytes()).hexdigest()
    for identity in (None, analysts):  # the recipient's analysts: the checksum is all they can check, and enough
        code = verify_delivery(folder, pub, identity, tmp_path / "analysts")
        said = capsys.readouterr().out
        assert code == 0, said
        assert f"OK {IDENTIFIERS} (checksum; sealed for the trusted third party" in said
    assert (tmp_path / "analysts" / SUBMISSION).read_text() == OUTPUTS.submission
    assert sorted(p.name for p in (tmp_path / "analysts").iterdir()) == sorted(
        [SUBMISSION, SUMMARY, f"tfp_withdrawals_{LA}_20250331.csv",
         f"tfp_progress_{LA}_20250331.csv"])  # the four attribute CSVs; no identifiers file among them
    # the analysts' key cannot open it, even when offered as the identifiers key
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt((folder / IDENTIFIERS).read_bytes(), [_identity_of(analysts)])
    code = verify_delivery(folder, pub, None, tmp_path / "tried", identifiers_identity=analysts)
    said = capsys.readouterr().out
    assert code == 1 and f"FAIL {IDENTIFIERS}: cannot be decrypted with this age identity" in said
    assert not (tmp_path / "tried" / IDENTIFIERS.removesuffix(".age")).exists()


def _identity_of(id_file: Path):
    line = next(x for x in id_file.read_text().splitlines() if x.startswith("AGE-SECRET-KEY-"))
    return pyrage.x25519.Identity.from_str(line)


def test_the_linkage_key_opens_the_identifiers_and_nothing_else(sealed, capsys, tmp_path):
    folder, pub, _, linkage = sealed
    code = verify_delivery(folder, pub, None, tmp_path / "ttp", identifiers_identity=linkage)
    said = capsys.readouterr().out
    assert code == 0, said
    assert f"OK {IDENTIFIERS} (2 rows, decrypted to" in said
    assert f"OK {SUBMISSION}.age (checksum; not decrypted" in said
    assert [p.name for p in (tmp_path / "ttp").iterdir()] == [IDENTIFIERS.removesuffix(".age")]
    assert (tmp_path / "ttp" / IDENTIFIERS.removesuffix(".age")).read_text(encoding="utf-8") == IDENTIFIERS_TEXT
    assert stat.S_IMODE((tmp_path / "ttp" / IDENTIFIERS.removesuffix(".age")).stat().st_mode) == 0o600
    # nothing of the content is printed
    assert "O'Neil" not in said and "AB123456C" not in said
    for name in (SUBMISSION, SUMMARY, f"tfp_withdrawals_{LA}_20250331.csv", f"tfp_progress_{LA}_20250331.csv"):
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt((folder / (name + ".age")).read_bytes(), [_identity_of(linkage)])
    # offered as the analysts' key, it opens none of the attribute files
    code = verify_delivery(folder, pub, linkage, tmp_path / "wrong")
    said = capsys.readouterr().out
    assert code == 1 and said.count("cannot be decrypted with this age identity (--age-identity)") == 4


def test_both_identities_at_once_or_identifiers_without_out_are_refused(sealed, capsys, tmp_path):
    folder, pub, analysts, linkage = sealed
    assert verify_delivery(folder, pub, analysts, tmp_path / "both", identifiers_identity=linkage) == 1
    assert "FAIL --age-identity and --identifiers-identity together" in capsys.readouterr().out
    assert verify_delivery(folder, pub, None, None, identifiers_identity=linkage) == 1
    assert "--identifiers-identity needs --out" in capsys.readouterr().out
    assert not (tmp_path / "both").exists() and not (folder / "decrypted").exists()
    assert main(["verify-delivery", str(folder), "--signing-public-key", str(pub), "--identifiers-identity",
                 str(linkage), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / IDENTIFIERS.removesuffix(".age")).is_file()


@pytest.mark.parametrize("damage", ["flip", "truncate", "drop"])
def test_a_damaged_identifiers_file_fails_without_any_key(sealed, capsys, damage):
    folder, pub, _, _ = sealed
    path = folder / IDENTIFIERS
    if damage == "flip":
        flip_byte(path, 40)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-3])
    else:
        path.unlink()
    code = verify_delivery(folder, pub, None, None)
    said = capsys.readouterr().out
    assert code == 1
    assert re.search(rf"(FAIL|MISSING) {re.escape(IDENTIFIERS)}", said), said


def test_an_identifiers_file_in_plaintext_is_refused_even_when_signed(sealed, capsys, tmp_path):
    folder, pub, _, _ = sealed
    plain = IDENTIFIERS.removesuffix(".age")
    data = b"person_token,forename\nb,Zoe\n"
    (folder / plain).write_bytes(data)
    manifest = manifest_of(folder)
    manifest["files"].append({"bytes": len(data), "name": plain, "rows": 1, "sha256": hashlib.sha256(data).hexdigest()})
    write_signed(folder, MANIFEST, manifest, signing_key({"TFP_SIGNING_KEY": os.environ["TFP_SIGNING_KEY"]}))
    code = verify_delivery(folder, pub, None, tmp_path / "plain")
    said = capsys.readouterr().out
    assert code == 1 and f"BAD NAME {MANIFEST}: lists {plain}, an identifiers file in plaintext" in said
    assert manifest_problems(MANIFEST, manifest) and not (tmp_path / "plain").exists()


def test_identifiers_and_attributes_never_meet_in_one_out_folder_across_runs(sealed, capsys, tmp_path):
    """One run refuses both identities; two runs into the same --out must not put them together either."""
    folder, pub, analysts, linkage = sealed
    shared = tmp_path / "shared"
    assert verify_delivery(folder, pub, analysts, shared) == 0  # the analysts decrypt their attribute files
    capsys.readouterr()
    assert verify_delivery(folder, pub, None, shared, identifiers_identity=linkage) == 1
    said = capsys.readouterr().out
    assert f"FAIL --out {shared} holds decrypted attribute files" in said
    assert not any(p.name.startswith("tfp_identifiers_") for p in shared.iterdir())
    # the other way round: the linkage function first, then the analysts into its folder
    ttp = tmp_path / "ttp"
    assert verify_delivery(folder, pub, None, ttp, identifiers_identity=linkage) == 0
    capsys.readouterr()
    assert verify_delivery(folder, pub, analysts, ttp) == 1
    assert f"FAIL --out {ttp} holds a decrypted identifiers file" in capsys.readouterr().out
    assert [p.name for p in ttp.iterdir()] == [IDENTIFIERS.removesuffix(".age")]
    # the analysts' default folder (DIR/decrypted) given to the linkage function, before the analysts use it
    assert verify_delivery(folder, pub, None, folder / "decrypted", identifiers_identity=linkage) == 1
    assert "FAIL --out" in capsys.readouterr().out


def test_decrypted_identifiers_never_go_inside_the_delivery_folder(sealed, capsys):
    """Whoever reads the delivery folder (the analysts, its SFTP account) must not find the identifiers there
    in plaintext: --out inside it is refused for the identifiers."""
    folder, pub, _, linkage = sealed
    assert verify_delivery(folder, pub, None, folder / "ttp", identifiers_identity=linkage) == 1
    assert "inside the delivery folder" in capsys.readouterr().out
    assert not (folder / "ttp").exists()
