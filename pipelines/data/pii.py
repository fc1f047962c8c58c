"""Redaction of personal data in customer-service messages before they reach a training set.

Each match is replaced by a placeholder token naming its kind (``PLACEHOLDERS``):

- ``<EMAIL>`` (kind ``email``): e-mail addresses.
- ``<ID>`` (kind ``id_card``): resident ID numbers, 18 digits (the last may be X) with a valid
  checksum and birth date, or 15-digit legacy numbers with a valid birth date.
- ``<PHONE>`` (kind ``phone``): mobile numbers (1[3-9] and 9 more digits, optional +86/0086/86
  prefix, spaces or dashes inside) and landlines (area code 0xx/0xxx, a 7-8 digit number not
  starting with 0 or 1, optional extension 转/分机/ext/-; "(010)" forms). Hotlines such as
  400-xxx-xxxx are businesses, not persons, and stay.
- ``<ADDRESS>`` (kind ``address``): street addresses, heuristically: optional province, city,
  district, town; then a road with a house number (路/街/大道/巷/弄 ... 号) and/or an estate with
  building, unit or room (小区/花园/苑 ... 栋/单元/室). A city alone is not redacted.

Order and tracking numbers must survive: agents need them. Every digit pattern is guarded by
lookarounds so that it never matches part of a longer run of digits or letters (a 16-20 digit
order id, SF1234567890123), ID numbers need a valid checksum and date, and an ID-shaped number
right after 订单/单号/运单/快递/物流/order is left alone. An 11-digit mobile-shaped number is
redacted even there: order ids that short are rare, and leaking a phone costs more.
Placeholders hold no digits, so ``redact`` is idempotent. Full-width digits and letters are
matched like half-width ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import NamedTuple

PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>",
    "id_card": "<ID>",
    "phone": "<PHONE>",
    "address": "<ADDRESS>",
}
# Earlier kinds win where matches overlap: an e-mail's digits are not a phone, an ID is not
# a landline, and a phone inside an address is reported as a phone.
_PRIORITY = ("email", "id_card", "phone", "address")


class PiiMatch(NamedTuple):
    kind: str
    span: tuple[int, int]


# Not inside a longer alphanumeric token (order ids, SKUs, tracking numbers like SF1234...).
_NB = r"(?<![0-9A-Za-z])"
_NA = r"(?![0-9A-Za-z])"
_SEP = r"[ \-]?"

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
    r"\.[A-Za-z]{2,}(?![A-Za-z0-9])"
)

_MOBILE = re.compile(rf"{_NB}(?:(?:\+|00)?86{_SEP})?1[3-9]\d{_SEP}\d{{4}}{_SEP}\d{{4}}{_NA}")

_AREA = r"0(?:10|2\d|[3-9]\d{2})"
_EXTENSION = r"(?:[ ]?(?:转|分机|ext\.?|x|-)[ ]?\d{1,6})?"
_LANDLINE = re.compile(
    rf"(?:[(（]{_AREA}[)）]{_SEP}|{_NB}{_AREA}{_SEP})[2-9]\d{{6,7}}(?!\d){_EXTENSION}{_NA}"
)

_DATE = r"(?P<yy>\d{2})(?P<mm>0[1-9]|1[0-2])(?P<dd>0[1-9]|[12]\d|3[01])"
_ID18 = re.compile(rf"{_NB}[1-9]\d{{5}}(?P<cc>18|19|20){_DATE}\d{{3}}[\dXx]{_NA}")
_ID15 = re.compile(rf"{_NB}[1-9]\d{{5}}{_DATE}\d{{3}}{_NA}")
_ORDER_CONTEXT = re.compile(
    r"(?:订单|单号|运单|快递|物流|order)(?:编号|号码|号)?(?:是|为)?[^\u4e00-\u9fff]{0,6}$",
    re.IGNORECASE,
)
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

# Address heuristics. A name is a run of Chinese characters; the words that usually introduce an
# address (寄到, 住在, 地址是, ...) are excluded so that they stay in the text.
_NAME_CHAR = r"(?:(?![到寄在是我你他她的送请发往址给改为住收货这那条])[\u4e00-\u9fff])"
_NUM = r"(?:\d{1,5}|[一二三四五六七八九十百零]{1,4})"
_ADMIN = (
    rf"(?:{_NAME_CHAR}{{2,7}}?(?:省|自治区|特别行政区))?"
    rf"(?:{_NAME_CHAR}{{1,6}}?(?:市|自治州|地区|盟))?"
    rf"(?:{_NAME_CHAR}{{1,6}}?(?:区|县|旗))?"
    rf"(?:{_NAME_CHAR}{{1,8}}?(?:镇|乡|街道))?"
)
# 道 alone ends many ordinary words (知道, 味道, 难道) that can precede a date like "5号".
_ROAD = rf"{_NAME_CHAR}{{1,10}}?(?:路|街|大道|巷|胡同|弄|(?<![知难味频报说晓管轨])道)"
_HOUSE = rf"(?:{_NUM}段)?[ ]?{_NUM}[ ]?(?:号|弄)(?:院|楼)?"
_ESTATE = rf"{_NAME_CHAR}{{1,10}}?(?:小区|花园|公寓|大厦|家园|新村|广场|苑|大院)"
_UNIT_PART = rf"(?:{_NUM}(?:号楼|栋|幢|单元|层|楼|室|号|房)|(?:[A-Za-z]|\d{{1,3}})座)"
_UNITS = rf"(?:[ \-]?{_UNIT_PART})+"
_STRONG_UNIT = rf"{_NUM}(?:号楼|栋|幢|单元|室)"
_ADDRESS = re.compile(
    rf"{_ADMIN}(?:"
    # 建国路88号(阳光小区)(3栋2单元501室)
    rf"{_ROAD}{_HOUSE}(?:{_ESTATE})?(?:{_UNITS})?"
    # 阳光花园3栋2单元501室: an estate needs a building, unit or room after it
    rf"|{_ESTATE}[ ]?(?=(?:[ \-]?{_UNIT_PART})*?[ \-]?{_STRONG_UNIT}){_UNITS}"
    # 3栋2单元501室 with no name before it
    rf"|(?<![0-9A-Za-z]){_NUM}(?:号楼|栋|幢){_UNITS}"
    rf")(?!\d)"
)


def _id18_valid(match: re.Match[str]) -> bool:
    digits = match.group(0)
    total = sum(int(d) * w for d, w in zip(digits[:17], _ID_WEIGHTS, strict=True))
    year = int(match["cc"] + match["yy"])
    return _ID_CHECK[total % 11] == digits[17].upper() and _real_date(year, match)


def _id15_valid(match: re.Match[str]) -> bool:
    return _real_date(1900 + int(match["yy"]), match)


def _real_date(year: int, match: re.Match[str]) -> bool:
    try:
        date(year, int(match["mm"]), int(match["dd"]))
    except ValueError:
        return False
    return True


def _not_order_number(text: str, start: int) -> bool:
    return _ORDER_CONTEXT.search(text, max(0, start - 16), start) is None


def _find(
    pattern: re.Pattern[str], text: str, accept: Callable[[re.Match[str]], bool] | None = None
) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(text) if accept is None or accept(m)]


def _candidates(text: str) -> dict[str, list[tuple[int, int]]]:
    return {
        "email": _find(_EMAIL, text),
        "id_card": _find(
            _ID18, text, lambda m: _id18_valid(m) and _not_order_number(text, m.start())
        )
        + _find(_ID15, text, lambda m: _id15_valid(m) and _not_order_number(text, m.start())),
        "phone": _find(_MOBILE, text) + _find(_LANDLINE, text),
        "address": _find(_ADDRESS, text),
    }


def find_pii(text: str) -> list[PiiMatch]:
    """Non-overlapping PII matches in ``text``, ordered by position (for reports and tests)."""
    # Matching runs on a copy with full-width ASCII folded one-to-one, so spans still fit ``text``.
    candidates = _candidates(text.translate(_FULL_WIDTH))
    taken: list[PiiMatch] = []
    for kind in _PRIORITY:
        for start, end in sorted(candidates[kind]):
            if end > start and all(end <= s or start >= e for _, (s, e) in taken):
                taken.append(PiiMatch(kind, (start, end)))
    return sorted(taken, key=lambda match: match.span)


def redact_with_counts(text: str) -> tuple[str, list[PiiMatch]]:
    """``redact`` that also returns what it replaced."""
    matches = find_pii(text)
    pieces: list[str] = []
    cursor = 0
    for kind, (start, end) in matches:
        pieces.append(text[cursor:start])
        pieces.append(PLACEHOLDERS[kind])
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces), matches


def redact(text: str) -> str:
    """``text`` with every PII match replaced by its placeholder (see the module docstring)."""
    return redact_with_counts(text)[0]
