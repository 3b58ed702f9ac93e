"""Stage 8: the files of one delivery, written to the outbox (contract section 7).

Each CSV is optionally age-encrypted to the recipient, then a canonical JSON manifest lists every
delivered file's size, SHA-256 and data rows, and an Ed25519 signature of the manifest's bytes
proves it came from us. age ciphertext differs on every encryption, so when a CSV's plaintext is
unchanged the ciphertext already in the outbox is reused: a re-run then writes the same bytes, the
same manifest and the same signature (Ed25519 signatures are deterministic).

Nothing read back from the outbox is trusted unchecked: whoever can write there holds no key. The
state file that allows a ciphertext's reuse carries an HMAC under a key derived from the signing key
(a state that does not verify means: encrypt afresh), and :func:`packaged_files`, what `deliver`
sends, verifies the manifest's signature and the rules the recipient applies
(:func:`tfp.verify.manifest_problems`) before it opens any file the manifest names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import stat
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from tfp.anonymise import Outputs
from tfp.errors import OutboxTampered
from tfp.fsmodes import PRIVATE_FILE, atomic_write, private_dir

if TYPE_CHECKING:
    from tfp.context import PackageResult, RunContext
    from tfp.ttp import IdentifiersCsv

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("submission", "summary", "withdrawals", "progress")
# Beside the files in outbox/<date>/: which plaintext and recipient each ciphertext holds. Checksums
# only, under an HMAC; it is never delivered.
STATE_FILE = ".package_state.json"
_STATE_KEY_LABEL = b"tfp package state v1"


@dataclass(frozen=True)
class PackagedFile:
    """One file of a delivery: what ``package`` writes to the outbox and ``deliver`` sends (one class for
    both, so the two cannot drift). ``plaintext_sha256`` identifies the content before encryption (for
    the manifest and signature, their own bytes); ``rows`` is None for those two."""

    name: str  # the delivered name, a plain file name
    path: Path  # where it is in the outbox
    plaintext_sha256: str
    rows: int | None = None  # data rows, excluding the header
    sha256: str | None = None  # of the bytes to deliver, when checked against the manifest (package does)
    bytes: int | None = None


def file_names(la_code: str, reference_date: date) -> dict[str, str]:
    """The plaintext names of the four CSVs and the manifest for one LA and R."""
    stamp = reference_date.strftime("%Y%m%d")
    names = {kind: f"tfp_{kind}_{la_code}_{stamp}.csv" for kind in KINDS}
    names["manifest"] = f"tfp_manifest_{la_code}_{stamp}.json"
    return names


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_outbox_file(path: Path, data: bytes) -> None:
    """Write with :func:`atomic_write`, so a reader never sees half a file;
    mode 0600, as everything in the outbox is personal. A file that already holds exactly these bytes
    is left alone (its mode made 0600)."""
    if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
        os.chmod(path, PRIVATE_FILE)
        return
    atomic_write(path, data)


def _state_mac(signing_key: bytes, la_code: str, reference_date: date, entries: object) -> str:
    """HMAC-SHA256 of the state's entries, bound to LA and R, under a key derived from the signing key
    (its own key, so a state MAC can never stand for a manifest signature or the other way round)."""
    key = hmac.new(signing_key, _STATE_KEY_LABEL, hashlib.sha256).digest()
    message = canonical_json({"entries": entries, "la_code": la_code, "reference_date": reference_date.isoformat()})
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _state_bytes(entries: dict[str, dict[str, str]], signing_key: bytes, la_code: str, reference_date: date) -> bytes:
    return canonical_json({"entries": entries, "mac": _state_mac(signing_key, la_code, reference_date, entries)})


def _load_state(folder: Path, signing_key: bytes, la_code: str,
                reference_date: date) -> dict[str, dict[str, str]] | None:
    """The state's entries when its HMAC verifies; {} when there is no state; None when there is one that
    does not verify (altered, written by an older tfp without a MAC, or under another signing key)."""
    try:
        state = json.loads(_read_regular(folder / STATE_FILE).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    if not (isinstance(state, dict) and isinstance(state.get("mac"), str) and isinstance(state.get("entries"), dict)):
        return None
    expected = _state_mac(signing_key, la_code, reference_date, state["entries"])
    return state["entries"] if hmac.compare_digest(expected, state["mac"]) else None


def _read_regular(path: Path) -> bytes:
    """A regular file's bytes, never through a symbolic link (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return f.read()


def _encrypt(plaintext: bytes, recipient: str) -> bytes:
    import pyrage

    return pyrage.encrypt(plaintext, [pyrage.x25519.Recipient.from_str(recipient)])


def _reusable(path: Path, before: dict[str, str], plain_sha: str, recipient: str | None) -> bytes | None:
    """The ciphertext at ``path`` when the verified state says it holds this plaintext for this recipient
    and its bytes are the ones recorded; else None."""
    if before.get("plaintext_sha256") != plain_sha or before.get("recipient") != recipient:
        return None
    try:
        data = _read_regular(path)
    except OSError:
        return None
    return data if _sha256(data) == before.get("sha256") else None


def sign(manifest: bytes, signing_key: bytes) -> bytes:
    """The .sig file's content: base64 of the Ed25519 signature of the manifest's bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return base64.b64encode(Ed25519PrivateKey.from_private_bytes(signing_key).sign(manifest))


@dataclass(frozen=True, repr=False)
class PackageTarget:
    """Where and how a night's delivery is written: the outbox, whose and which night it is, the
    encryption (``age`` to ``recipient``, or ``none``), the signing key and the version the manifest names."""

    outbox: Path
    la_code: str
    reference_date: date
    encryption: str
    recipient: str | None
    signing_key: bytes
    pipeline_version: str
    # delivery.identifiers.recipient: the trusted third party's age recipient, None when the option is off
    identifiers_recipient: str | None = None

    def __repr__(self) -> str:
        return f"PackageTarget({self.outbox}, {self.la_code}, {self.reference_date}, {self.encryption})"

    @classmethod
    def of(cls, ctx: RunContext) -> PackageTarget:
        """The target a night's context names: its config's outbox, LA and delivery, its keys' signing key."""
        from tfp import __version__

        d = ctx.config.delivery
        return cls(outbox=ctx.config.outbox_dir, la_code=ctx.config.local_authority.code,
                   reference_date=ctx.reference_date, encryption=d.encryption, recipient=d.recipient,
                   signing_key=ctx.keys.signing, pipeline_version=__version__,
                   identifiers_recipient=d.identifiers.recipient if d.identifiers else None)


def _write_identifiers(folder: Path, target: PackageTarget, identifiers: IdentifiersCsv | None,
                       previous: dict[str, dict[str, str]], state: dict[str, dict[str, str]]) -> PackagedFile | None:
    """The identifiers file for the trusted third party (tfp.ttp), sealed to its own recipient only.

    Its plaintext exists only in memory: encrypted here, and only the ciphertext is written (through
    :func:`write_outbox_file`'s temporary file of the same ciphertext). With the option off, an identifiers
    file an earlier run left for R is removed and None is returned."""
    from tfp.ttp import identifiers_name

    name = identifiers_name(target.la_code, target.reference_date)
    path = folder / name
    recipient = target.identifiers_recipient
    if recipient is None:
        path.unlink(missing_ok=True)
        return None
    if identifiers is None:
        raise ValueError("delivery.identifiers is on but no identifiers were built for this package")
    if target.encryption != "age" or recipient == target.recipient:
        raise ValueError("the identifiers file needs encryption age and a recipient of its own, not "
                         "delivery.recipient")
    plaintext = identifiers.text.encode("utf-8")
    plain_sha = _sha256(plaintext)
    data = _reusable(path, previous.get(name, {}), plain_sha, recipient) or _encrypt(plaintext, recipient)
    del plaintext
    state[name] = {"plaintext_sha256": plain_sha, "recipient": recipient, "sha256": _sha256(data)}
    write_outbox_file(path, data)
    return PackagedFile(name, path, plain_sha, identifiers.rows, _sha256(data), len(data))


def write_package(outputs: Outputs, target: PackageTarget,
                  identifiers: IdentifiersCsv | None = None) -> list[PackagedFile]:
    """Write the delivery for R into ``outbox/<YYYY-MM-DD>/`` and return its files in delivery order
    (the CSVs, the identifiers file when ``target.identifiers_recipient`` is set, the manifest, the
    signature)."""
    outbox, la_code, reference_date = target.outbox, target.la_code, target.reference_date
    encryption, recipient, signing_key = target.encryption, target.recipient, target.signing_key
    pipeline_version = target.pipeline_version
    if encryption not in ("age", "none"):
        raise ValueError(f"unknown encryption {encryption!r}")
    if encryption == "age" and not (recipient or "").startswith("age1"):
        raise ValueError("encryption age needs an age recipient (age1...)")
    private_dir(Path(outbox))
    folder = private_dir(Path(outbox) / reference_date.isoformat())
    names = file_names(la_code, reference_date)
    previous = _load_state(folder, signing_key, la_code, reference_date)
    if previous is None:
        log.warning("%s in %s does not verify: every CSV is encrypted afresh", STATE_FILE, folder)
        previous = {}
    state: dict[str, dict[str, str]] = {}
    texts = {"submission": (outputs.submission, outputs.submission_rows),
             "summary": (outputs.summary, outputs.summary_rows),
             "withdrawals": (outputs.withdrawals, outputs.withdrawal_rows),
             "progress": (outputs.progress, outputs.progress_rows)}

    files: list[PackagedFile] = []
    for kind in KINDS:
        text, rows = texts[kind]
        plaintext = text.encode("utf-8")
        plain_sha = _sha256(plaintext)
        plain_name = names[kind]
        if encryption == "age":
            name = plain_name + ".age"
            path = folder / name
            before = previous.get(name, {})
            data = _reusable(path, before, plain_sha, recipient) or _encrypt(plaintext, recipient)
            state[name] = {"plaintext_sha256": plain_sha, "recipient": recipient, "sha256": _sha256(data)}
            stale = folder / plain_name
        else:
            name, path, data = plain_name, folder / plain_name, plaintext
            stale = folder / (plain_name + ".age")
        write_outbox_file(path, data)
        stale.unlink(missing_ok=True)  # the other encryption's copy from an earlier run must not linger
        files.append(PackagedFile(name, path, plain_sha, rows, _sha256(data), len(data)))
    if (sealed := _write_identifiers(folder, target, identifiers, previous, state)) is not None:
        files.append(sealed)

    manifest = canonical_json({
        "files": [{"bytes": f.bytes, "name": f.name, "rows": f.rows, "sha256": f.sha256} for f in files],
        "la_code": la_code,
        "pipeline_version": pipeline_version,
        "reference_date": reference_date.isoformat(),
    })
    signature = sign(manifest, signing_key)
    write_outbox_file(folder / STATE_FILE, _state_bytes(state, signing_key, la_code, reference_date))
    for name, data in ((names["manifest"], manifest), (names["manifest"] + ".sig", signature)):
        write_outbox_file(folder / name, data)
        files.append(PackagedFile(name, folder / name, _sha256(data), None, _sha256(data), len(data)))
    log.info("packaged %d files for %s in %s (encryption %s)", len(files), reference_date, folder, encryption)
    return files


def packaged_files(outbox: Path, la_code: str, reference_date: date, signing_key: bytes) -> list[PackagedFile]:
    """The files :func:`write_package` wrote for R, read back from the outbox in delivery order.

    Trusts nothing in the outbox it has not checked, in this order: the manifest's signature (with the
    public half of ``signing_key``) before anything in it is read; its signed la_code and reference_date
    are the config's LA and R; the recipient's naming rules (plain names of this LA and R, none twice);
    then every file's size and SHA-256, and for a ciphertext its plaintext checksum from a state whose
    HMAC verifies. Any failure raises :class:`OutboxTampered` naming the file and the rule, before a byte
    is delivered; re-running ``package`` for R writes a good package again.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tfp.verify import manifest_problems

    folder = Path(outbox) / reference_date.isoformat()
    manifest_name = file_names(la_code, reference_date)["manifest"]
    manifest_path, sig_path = folder / manifest_name, folder / (manifest_name + ".sig")
    if not manifest_path.is_file() and not manifest_path.is_symlink():
        raise FileNotFoundError(f"no package for {reference_date}: {manifest_path} is missing")
    try:
        manifest_bytes, sig = _read_regular(manifest_path), _read_regular(sig_path)
    except OSError as e:
        raise OutboxTampered(f"{manifest_name} or {sig_path.name} in the outbox is missing, a link or not a "
                             f"regular file ({type(e).__name__}); run package again") from None
    public = Ed25519PrivateKey.from_private_bytes(signing_key).public_key()
    try:
        public.verify(base64.b64decode(sig.strip(), validate=True), manifest_bytes)
    except (InvalidSignature, binascii.Error, ValueError):
        raise OutboxTampered(f"{sig_path.name} does not verify {manifest_name} with the signing key: the manifest "
                             "was changed after it was packaged; run package again") from None
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        manifest = None
    problems = manifest_problems(manifest_name, manifest)
    if not problems and (manifest["la_code"], manifest["reference_date"]) != (la_code, reference_date.isoformat()):
        problems.append(f"NAME MISMATCH {manifest_name}: its signed la_code and reference_date are not this "
                        "config's LA and R (a replayed delivery)")
    if problems:
        raise OutboxTampered("; ".join(problems))
    state = _load_state(folder, signing_key, la_code, reference_date)
    files: list[PackagedFile] = []
    for entry in manifest["files"]:
        name = entry["name"]
        path = folder / name
        try:
            data = _read_regular(path)
        except OSError as e:
            raise OutboxTampered(f"{name} in the outbox is missing, a link or not a regular file "
                                 f"({type(e).__name__})") from None
        if len(data) != entry["bytes"] or _sha256(data) != entry["sha256"]:
            raise OutboxTampered(f"{name} in the outbox does not match its manifest")
        if name.endswith(".age"):
            if state is None:
                raise OutboxTampered(f"{STATE_FILE} in the outbox does not verify (its HMAC); run package again")
            recorded = state.get(name, {})
            plain_sha = recorded.get("plaintext_sha256")
            if not plain_sha or recorded.get("sha256") != entry["sha256"]:
                raise OutboxTampered(f"{name}: its plaintext checksum is not recorded in {STATE_FILE}")
        else:
            plain_sha = entry["sha256"]
        files.append(PackagedFile(name, path, plain_sha, entry["rows"], entry["sha256"], entry["bytes"]))
    files.append(PackagedFile(manifest_name, manifest_path, _sha256(manifest_bytes), None, _sha256(manifest_bytes),
                              len(manifest_bytes)))
    files.append(PackagedFile(sig_path.name, sig_path, _sha256(sig), None, _sha256(sig), len(sig)))
    return files


def run(ctx: RunContext) -> PackageResult:
    """The package task: build R's outputs, write them to the outbox, then record what was released
    (only what was packaged binds later nights)."""
    from tfp.anonymise import build_outputs, record_release
    from tfp.context import PackageResult
    from tfp.lineage import Lineage, local_file, table

    outputs = build_outputs(ctx.warehouse, ctx.reference_date, ctx.config, ctx.keys)
    target = PackageTarget.of(ctx)
    identifiers = None
    if target.identifiers_recipient is not None:
        from tfp.ttp import build_identifiers

        # the people of the submission: build_outputs records each one's released levels
        identifiers = build_identifiers(ctx.warehouse, ctx.reference_date, outputs.released, ctx.keys.pseudonym)
        if identifiers.rows != outputs.submission_rows:
            raise RuntimeError(f"identifiers for {ctx.reference_date}: {identifiers.rows} people, the submission "
                               f"has {outputs.submission_rows}")
    files = write_package(outputs, target, identifiers)
    del identifiers
    record_release(ctx.warehouse, ctx.reference_date, outputs.released)
    reads = ("stg_families", "person_consent", "family_flags", "released_generalisation")
    lineage = Lineage.of(inputs=[table(ctx.warehouse, t) for t in reads],
                         outputs=[*(local_file(f.path) for f in files), table(ctx.warehouse, "released_generalisation")])
    return PackageResult(stage="package", outbox=files[0].path.parent, files=tuple(f.name for f in files),
                         counts={"persons_submitted": outputs.submission_rows, "withdrawals": outputs.withdrawal_rows,
                                 **({"identifiers": outputs.submission_rows} if target.identifiers_recipient else {})},
                         published_summary=outputs.published, lineage=lineage)
