"""`tfp verify-delivery`: what the recipient runs on a delivery folder.

It trusts nothing it has not checked. First each manifest's Ed25519 signature with the sender's
public key; only then is anything in the manifest acted on. A signed manifest must also agree with
the names: its own name is ``tfp_manifest_<la_code>_<reference_date>.json`` from its signed
``la_code`` and ``reference_date``, and every file it lists is a plain name
``tfp_<kind>_<la_code>_<reference_date>.csv[.age]`` (so yesterday's delivery renamed to today's names,
or a name with a path, fails). Then, against that manifest, every file's size, SHA-256 and (after
decryption) its number of data rows. Every ``tfp_*`` entry of the folder must be covered by a
manifest that passed all this; anything else named ``tfp_*`` fails the delivery, other names are
listed as ignored. Each manifest covers only its own files, so a folder may hold several dates'
deliveries. Decrypted files are written only into ``--out``, by their own base name, mode 0600,
and only once they have passed every check. Output names files and rules, never their contents.

The identifiers file for the trusted third party (``tfp_identifiers_*.csv.age``, tfp.ttp) is sealed to
another key than the attribute files. It is checked like any file (signed manifest, size, SHA-256), and
needs no key for that; it is decrypted only with ``--identifiers-identity`` (the linkage function's key),
never tried with ``--age-identity`` (the analysts'), and then only into an ``--out`` given explicitly.
One run takes one of the two identities, never both, and a run refuses an ``--out`` that already holds the
other kind (or, for the identifiers, one inside the delivery folder), so that no run puts identifiers and
attributes in one folder. A manifest that lists an identifiers file without ``.age`` fails: it has no plaintext form.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import re
from datetime import date
from pathlib import Path

_FILE_KEYS = {"bytes", "name", "rows", "sha256"}
_LA_CODE = re.compile(r"[A-Z][0-9]{8}")  # a GSS code: no separator, no path character
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _public_key(path: Path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = base64.b64decode(Path(path).read_text(encoding="ascii").strip(), validate=True)
    if len(raw) != 32:
        raise ValueError("not a raw 32-byte Ed25519 public key")
    return Ed25519PublicKey.from_public_bytes(raw)


def _identity(path: Path):
    """The first ``AGE-SECRET-KEY-`` line of an age identity file (age-keygen's format: comments allowed)."""
    import pyrage

    for line in Path(path).read_text(encoding="ascii").splitlines():
        if line.strip().startswith("AGE-SECRET-KEY-"):
            return pyrage.x25519.Identity.from_str(line.strip())
    raise ValueError("no AGE-SECRET-KEY- line")


def _data_rows(plaintext: bytes) -> int:
    """CSV records after the header (a quoted field may span lines)."""
    records = sum(1 for _ in csv.reader(io.StringIO(plaintext.decode("utf-8"), newline="")))
    return max(records - 1, 0)


def _show(name: object) -> str:
    """A name as it may be printed: as is when it is a plain file name or path, else escaped (no terminal
    control characters from a file name reach the screen)."""
    text = name if isinstance(name, str) else repr(name)
    return text[:200] if re.fullmatch(r"[\w.+/-]{1,200}", text, re.ASCII) else ascii(text)[:200]


def _is_path(name: str) -> bool:
    return "/" in name or "\\" in name or "\0" in name or name in (".", "..") or Path(name).name != name


def _entry_ok(entry: object) -> bool:
    return (isinstance(entry, dict) and _FILE_KEYS <= set(entry) and isinstance(entry["name"], str)
            and type(entry["bytes"]) is int and isinstance(entry["sha256"], str) and _SHA256.fullmatch(entry["sha256"])
            and (entry["rows"] is None or type(entry["rows"]) is int))


def _shape_ok(manifest: object) -> bool:
    if not (isinstance(manifest, dict) and isinstance(manifest.get("files"), list)
            and all(_entry_ok(e) for e in manifest["files"])
            and isinstance(manifest.get("la_code"), str) and _LA_CODE.fullmatch(manifest["la_code"])
            and isinstance(manifest.get("reference_date"), str)
            and re.fullmatch(r"\d{4}-\d{2}-\d{2}", manifest["reference_date"])):
        return False
    try:
        date.fromisoformat(manifest["reference_date"])
    except ValueError:
        return False
    return True


def manifest_problems(manifest_name: str, manifest: object) -> list[str]:
    """What is wrong with a parsed manifest called ``manifest_name``, its signature aside: its shape, and
    where it disagrees with the names (its own, and those of the files it lists). Empty when nothing.

    Call it only on a manifest whose signature verified, or one this process just wrote (the sender
    can run it before delivering)."""
    if not _shape_ok(manifest):
        return [f"BAD MANIFEST {_show(manifest_name)}: not a manifest this tool understands"]
    la_code, reference_date = manifest["la_code"], manifest["reference_date"]
    stamp = date.fromisoformat(reference_date).strftime("%Y%m%d")
    problems = []
    expected = f"tfp_manifest_{la_code}_{stamp}.json"
    if manifest_name != expected:
        problems.append(f"NAME MISMATCH {_show(manifest_name)}: its signed la_code {la_code} and reference_date "
                        f"{reference_date} make it {expected} (a renamed or replayed delivery)")
    listed = re.compile(rf"tfp_(?P<kind>[a-z]+)_{la_code}_{stamp}\.csv(\.age)?")
    seen: set[str] = set()
    for entry in manifest["files"]:
        name = entry["name"]
        if _is_path(name):
            problems.append(f"BAD NAME {_show(manifest_name)}: lists {_show(name)}, a path rather than a file name "
                            "in this folder (it is not read, and decrypting it would write outside --out)")
        elif not (m := listed.fullmatch(name)) or m["kind"] == "manifest":
            problems.append(f"NAME MISMATCH {_show(manifest_name)}: lists {_show(name)}, which is not "
                            f"tfp_<kind>_{la_code}_{stamp}.csv[.age] (the manifest's own la_code and reference_date)")
        elif m["kind"] == "identifiers" and not name.endswith(".age"):
            problems.append(f"BAD NAME {_show(manifest_name)}: lists {name}, an identifiers file in plaintext (it is "
                            "only ever delivered encrypted, as .csv.age)")
        elif name in seen:
            problems.append(f"BAD MANIFEST {_show(manifest_name)}: lists {name} twice")
        seen.add(name)
    return problems


def _check_manifest(manifest_path: Path, public_key) -> tuple[dict | None, list[str]]:
    """The manifest when its signature verifies, its shape is right and it agrees with the names; else None
    and the problems. The bytes are parsed only after the signature verifies."""
    from cryptography.exceptions import InvalidSignature

    sig_path = manifest_path.with_name(manifest_path.name + ".sig")
    manifest_bytes = manifest_path.read_bytes()
    if not sig_path.is_file():
        return None, [f"MISSING {sig_path.name}: the signature of {manifest_path.name} is not there"]
    try:
        signature = base64.b64decode(sig_path.read_bytes().strip(), validate=True)
        public_key.verify(signature, manifest_bytes)
    except (InvalidSignature, binascii.Error, ValueError):
        return None, [f"BAD SIGNATURE {manifest_path.name}: {sig_path.name} does not verify it with this public key "
                      "(the manifest or the signature was altered, or the key is not the sender's)"]
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        manifest = None
    problems = manifest_problems(manifest_path.name, manifest)
    return (None, problems) if problems else (manifest, [])


def _write_private(out: Path, name: str, data: bytes) -> Path:
    """``out/name`` (a base name), 0600 in a 0700 ``out``, via a temporary file and a rename, so an existing
    file or symbolic link of that name is replaced rather than followed."""
    from tfp.fsmodes import atomic_write, private_dir

    target = out / name
    if Path(name).name != name or target.parent != out:
        raise ValueError(f"{_show(name)} is not a file name")  # manifest_problems already refused it
    private_dir(out)
    atomic_write(target, data)
    return target


def _check_file(directory: Path, entry: dict, identity, out: Path, identifiers_identity=None) -> tuple[bool, str]:
    name = entry["name"]  # a plain base name: _name_problems checked it
    path = directory / name
    if not path.is_file():
        return False, f"MISSING {name}"
    data = path.read_bytes()
    if len(data) != entry["bytes"]:
        return False, f"FAIL {name}: {len(data)} bytes, the manifest says {entry['bytes']} (truncated or altered)"
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        return False, f"FAIL {name}: SHA-256 differs from the manifest (altered)"
    decrypted = name.endswith(".age")
    if decrypted:
        sealed = name.startswith("tfp_identifiers_")  # tfp.ttp: the trusted third party's key, not the analysts'
        key = identifiers_identity if sealed else identity
        if key is None and sealed:
            return True, (f"OK {name} (checksum; sealed for the trusted third party's linkage function, not "
                          "decrypted: only its key opens it, with --identifiers-identity)")
        if key is None:
            return True, f"OK {name} (checksum; not decrypted: give --age-identity to decrypt and count rows)"
        import pyrage

        try:
            plaintext = pyrage.decrypt(data, [key])
        except pyrage.DecryptError:
            which = "--identifiers-identity" if sealed else "--age-identity"
            return False, f"FAIL {name}: cannot be decrypted with this age identity ({which})"
    else:
        plaintext = data
    said = ""
    if entry["rows"] is not None:
        try:
            rows = _data_rows(plaintext)
        except (UnicodeDecodeError, csv.Error):
            return False, f"FAIL {name}: not a UTF-8 CSV"
        if rows != entry["rows"]:
            return False, f"FAIL {name}: {rows} rows, the manifest says {entry['rows']}"
        said = f"{rows} rows"
    if decrypted:
        target = _write_private(out, name.removesuffix(".age"), plaintext)
        said = f"{said}, decrypted to {target}" if said else f"decrypted to {target}"
    return True, f"OK {name} ({said})" if said else f"OK {name}"


def _mixing(directory: Path, out: Path, identifiers: bool) -> str | None:
    """Why decrypting into ``out`` would put identifiers and attributes together, or the identifiers where the
    delivery folder's readers would find them; None when it would not. One run takes one identity, and this
    keeps two runs (the analysts', the linkage function's) from meeting in one folder either."""
    if identifiers and out.resolve().is_relative_to(directory.resolve()):
        return (f"FAIL --out {out} is inside the delivery folder: the decrypted identifiers go only to a folder "
                "of the linkage function's own")
    # what verify decrypts: tfp_<kind>_<la>_<date>.csv (a manifest or a ciphertext there is no plaintext)
    try:
        held = [p.name for p in out.iterdir() if p.name.startswith("tfp_") and p.name.endswith(".csv")] \
            if out.is_dir() else []
    except OSError as e:  # unreadable: what it holds cannot be checked, so nothing is written there
        return f"FAIL --out {out} cannot be listed ({e.strerror or type(e).__name__}): name a folder you can read"
    if identifiers and any(not n.startswith("tfp_identifiers_") for n in held):
        return (f"FAIL --out {out} holds decrypted attribute files: the identifiers never go into the same "
                "folder as the attributes; name a folder of the linkage function's own")
    if not identifiers and any(n.startswith("tfp_identifiers_") for n in held):
        return (f"FAIL --out {out} holds a decrypted identifiers file: the attributes never go into the same "
                "folder as the identifiers; name another folder")
    return None


def verify_delivery(directory: Path, signing_public_key: Path, age_identity: Path | None = None,
                    out: Path | None = None, identifiers_identity: Path | None = None) -> int:
    """Check every manifest in ``directory``, the files it lists, and that nothing named ``tfp_*`` is
    there unlisted; print one line per file.

    ``age_identity`` (the analysts') decrypts the attribute files; ``identifiers_identity`` (the trusted third
    party's) the identifiers file only, and needs an explicit ``out``. Not both in one run.
    Returns 0 when everything verifies, 1 when anything is wrong, missing or not covered.
    """
    if age_identity is not None and identifiers_identity is not None:
        print("FAIL --age-identity and --identifiers-identity together: the identifiers and the attributes are "
              "kept apart (separate keys, separate holders); verify with one of them per run")
        return 1
    if identifiers_identity is not None and out is None:
        print("FAIL --identifiers-identity needs --out: the decrypted identifiers go only to a folder you name")
        return 1
    directory = Path(directory)
    out = Path(out) if out else directory / "decrypted"
    if out.resolve() == directory.resolve():
        print(f"FAIL --out {out} is the delivery folder itself: decrypted files must go elsewhere")
        return 1
    if (mixed := _mixing(directory, out, identifiers=identifiers_identity is not None)) is not None:
        print(mixed)
        return 1
    try:
        public_key = _public_key(signing_public_key)
    except (OSError, ValueError) as e:
        print(f"FAIL signing public key {signing_public_key}: {e.__class__.__name__}: cannot be read as base64 "
              "raw Ed25519")
        return 1
    identity = None
    if age_identity is not None:
        try:
            identity = _identity(age_identity)
        except Exception as e:  # pyrage raises its own IdentityError for a malformed key
            print(f"FAIL age identity {age_identity}: {e.__class__.__name__}: not an age identity file")
            return 1
    sealed_identity = None
    if identifiers_identity is not None:
        try:
            sealed_identity = _identity(identifiers_identity)
        except Exception as e:  # as above
            print(f"FAIL identifiers identity {identifiers_identity}: {e.__class__.__name__}: not an age identity file")
            return 1
    manifests = sorted(p for p in directory.glob("tfp_manifest_*.json") if p.is_file())
    if not manifests:
        print(f"FAIL no tfp_manifest_*.json in {directory}")
        return 1
    problems = 0
    covered: set[str] = set()  # names a verified manifest accounts for
    reported: set[str] = set()  # manifests and signatures already failed above
    for manifest_path in manifests:
        manifest, errors = _check_manifest(manifest_path, public_key)
        for line in errors:
            print(line)
        if manifest is None:
            problems += len(errors)
            reported |= {manifest_path.name, manifest_path.name + ".sig"}
            continue
        covered |= {manifest_path.name, manifest_path.name + ".sig"}
        print(f"OK {manifest_path.name} (signature verifies; {manifest['la_code']} {manifest['reference_date']})")
        for entry in manifest["files"]:
            covered.add(entry["name"])
            ok, line = _check_file(directory, entry, identity, out, sealed_identity)
            print(line)
            problems += not ok
    out_resolved = out.resolve()
    for path in sorted(directory.iterdir()):
        if path.name in covered or path.name in reported or path.resolve() == out_resolved:
            continue
        if path.name.startswith("tfp_"):
            print(f"NOT COVERED {_show(path.name)}: no manifest that verifies lists it (unsigned: do not use it)")
            problems += 1
        else:
            print(f"IGNORED {_show(path.name)}: not a tfp_* file, not checked")
    print("delivery verified" if problems == 0 else f"delivery NOT verified: {problems} problem(s)")
    return 0 if problems == 0 else 1
