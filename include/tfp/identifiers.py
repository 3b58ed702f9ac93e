"""UK identifiers and names: the one place that says what a valid NINO, UPN or postcode is,
and how a name or postcode is normalised for comparison and for the match keys."""

from __future__ import annotations

import re
import unicodedata

NINO = re.compile(r"^(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]$")
POSTCODE = re.compile(
    r"^(?:GIR 0AA|(?:[A-PR-UWYZ][0-9][0-9]?|[A-PR-UWYZ][A-HK-Y][0-9][0-9]?|[A-PR-UWYZ][0-9][A-HJKSTUW]"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRVWXY]) [0-9][ABD-HJLNP-UW-Z]{2})$"
)
UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"
UPN_SHAPE = re.compile(r"^[A-HJ-NP-RT-Z][0-9]{11}[0-9A-HJ-NP-RT-Z]$")


def normalise_nino(value: str | None) -> str:
    return re.sub(r"\s+", "", value or "").upper()


def is_valid_nino(value: str | None) -> bool:
    return bool(NINO.match(normalise_nino(value)))


def normalise_postcode(value: str | None) -> str:
    """Upper case with exactly one space before the inward code (the last three characters)."""
    compact = re.sub(r"\s+", "", value or "").upper()
    return f"{compact[:-3]} {compact[-3:]}" if len(compact) > 3 else compact


def is_valid_postcode(value: str | None) -> bool:
    return bool(POSTCODE.match(normalise_postcode(value)))


def postcode_district(value: str) -> str:
    """The outward code of a valid postcode: ``SW1A 1AA`` -> ``SW1A``."""
    return normalise_postcode(value).split(" ")[0]


def upn_check_letter(body: str) -> str:
    """The DfE check letter for the twelve characters after it."""
    total = 0
    for position, char in enumerate(body, start=2):
        total += int(char) * position if char.isdigit() else UPN_LETTERS.index(char) * position
    return UPN_LETTERS[total % 23]


def is_valid_upn(value: str | None) -> bool:
    upn = (value or "").strip().upper()
    if not UPN_SHAPE.match(upn):
        return False
    if upn[-1].isalpha() and upn[-1] not in UPN_LETTERS:
        return False
    return upn[0] == upn_check_letter(upn[1:])


def normalise_name(value: str | None) -> str:
    """NFKD, diacritics dropped, upper case, only A-Z kept (contract section 7's name recipe)."""
    decomposed = unicodedata.normalize("NFKD", value or "")
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^A-Z]", "", stripped.upper())


NHS_SHAPE = re.compile(r"^[0-9]{10}$")


def normalise_nhs_number(value: str | None) -> str:
    """The ten digits without the spaces or hyphens a form may put between its 3-3-4 groups."""
    return re.sub(r"[\s-]+", "", value or "")


def nhs_check_digit(body: str) -> int | None:
    """The modulus-11 check digit of the first nine digits (weights 10 down to 2): 11 - (sum mod 11),
    where 11 gives 0 and 10 means no valid number has this body (None)."""
    check = 11 - sum(int(c) * w for c, w in zip(body, range(10, 1, -1), strict=True)) % 11
    return 0 if check == 11 else None if check == 10 else check


def is_valid_nhs_number(value: str | None) -> bool:
    digits = normalise_nhs_number(value)
    return bool(NHS_SHAPE.match(digits)) and nhs_check_digit(digits[:9]) == int(digits[9])
