"""Redaction of personal data in customer-service messages before they reach a training set.

Each match is replaced by a placeholder token naming its kind (``PLACEHOLDERS``):

- ``<EMAIL>`` (kind ``email``): e-mail addresses, also with a Chinese local part (张三@qq.com)
  and spelled out (zhangsan at qq dot com, zhangsan(at)qq.com, zhangsan[at]qq[dot]com).
- ``<ID>`` (kind ``id_card``): resident ID numbers, 18 digits (the last may be X) with a valid
  checksum and birth date (spaces or dashes may split them anywhere: 110101 19900307 1234), or
  unsplit 15-digit legacy numbers with a valid birth date.
- ``<CARD>`` (kind ``bank_card``): bank card numbers, 16-19 digits with a valid Luhn check digit,
  whole or in groups of four split by spaces or dashes, that follow a card word (卡号, 银行卡,
  card, 账号, ...) or, bare, start like a card (3-6). Never right after an order word.
- ``<PHONE>`` (kind ``phone``): mobile numbers (1[3-9] and 9 more digits, optional +86/0086/86
  prefix) grouped 3-4-4, 4-3-4 or not at all, split by spaces, dashes, dots or emoji, or with
  every digit split by one separator; also written in Chinese numerals (一三八..., 幺, 两,
  壹贰叁...) or a mix of both. Landlines: area code 0xx/0xxx, a 7-8 digit number not starting
  with 0 or 1, optional extension 转/分机/ext/-; "(010)" forms. Hotlines such as 400-xxx-xxxx
  are businesses, not persons, and stay.
- ``<ACCOUNT>`` (kind ``im_account``): QQ numbers after QQ/扣扣/企鹅/Q号 and WeChat ids after
  微信/vx/wx/V信/加V (a letter, then 5-19 letters, digits, _ or -; or 5-12 digits), and wxid_...
  ids. The word before the id stays ("QQ <ACCOUNT>").
- ``<ADDRESS>`` (kind ``address``): street addresses, heuristically: optional province, city,
  district, town; then a road with a house number (路/街/大道/巷/弄 ... 号) and/or an estate with
  building, unit or room (小区/花园/苑 ... 栋/单元/室); a road or village without a number when
  at least two administrative levels come first (北京市朝阳区建国路); a village with a group or
  house number (张家庄村3组, 王家村8号). A city alone, a road alone (在中山路的店买的) and a
  building alone (我住3号楼) are not redacted. A few lead-in words (联系, 公司, 老家, 麻烦, ...)
  are cut off the front of a match.

Order and tracking numbers must survive: agents need them. Every digit pattern must not start or
end inside a longer run of digits, so a 16-20 digit order id is never a phone or part of one.
Letters glued to the front of the digits make them part of a code (SF1234567890123,
YT13812345678) unless the letters are a contact word (Tel13812345678, vx13812345678, qq..., id...).
ID numbers need a valid checksum and date, bank cards a valid Luhn digit, and an ID- or
card-shaped number right after 订单/单号/运单/快递/物流/编号/order is left alone. An 11-digit
mobile-shaped number is redacted even there: order ids that short are rare, and leaking a phone
costs more. Placeholders hold no digits, so ``redact`` is idempotent. Full-width digits and
letters are matched like half-width ones; spans always index the text as given.

The module uses only the standard library and imports nothing else from ``pipelines``: it is
copied into the package that logged models carry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import NamedTuple

PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>",
    "id_card": "<ID>",
    "bank_card": "<CARD>",
    "phone": "<PHONE>",
    "im_account": "<ACCOUNT>",
    "address": "<ADDRESS>",
}
# Earlier kinds win where matches overlap: an e-mail's digits are not a phone, an ID is not a
# card or a landline, a phone used as a WeChat id is reported as a phone, and a phone inside an
# address is reported as a phone.
_PRIORITY = ("email", "id_card", "bank_card", "phone", "im_account", "address")


class PiiMatch(NamedTuple):
    kind: str
    span: tuple[int, int]


Span = tuple[int, int]
# A check gets the match and the text searched; it returns the span to redact or None.
Check = Callable[[re.Match[str], str], "Span | None"]

# Matching runs on copies folded one character to one character, so spans fit the original.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_CN_NUMERALS = "零〇一二三四五六七八九幺两壹贰叁肆伍陆柒捌玖"
_CN_DIGITS = str.maketrans(_CN_NUMERALS, "0012345678912123456789")

# Letters glued to the front of a number make it a code (SF1234567890123) unless they say
# what the number is.
_CONTACT_WORDS = frozenset(
    {"tel", "phone", "mobile", "mob", "cell", "call", "dh", "sj", "vx", "wx", "v", "wechat"}
    | {"weixin", "qq", "id", "sfz", "card"}
)
_NA = r"(?![0-9A-Za-z])"
_EMOJI = "\U0001f300-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d"
# Between the groups of a phone number: nothing, a few spaces with an optional dash or dot, or
# a few emoji. Bounded, so no backtracking blow-up.
_GAP = rf"(?:[ \t\r\n]{{0,2}}[.\-·]?[ \t\r\n]{{0,2}}|[{_EMOJI}]{{1,3}})"
_SPLIT = r"[\s\-]?"  # between any two digits of an 18-digit ID number

# --- e-mail -------------------------------------------------------------------------------------
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+){0,4}\.[A-Za-z]{2,}(?![A-Za-z0-9])"
_EMAIL = re.compile(
    rf"(?:(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*|[\u4e00-\u9fff]{{1,12}})@{_DOMAIN}"
)
# The words that often come right before a Chinese local part and are not part of it.
_EMAIL_LEAD = re.compile(r".*(?:邮箱|邮件|地址|联系|是|为|到|给|至|发|用|的|我|人|箱|和|或)")
_TLD = r"(?i:com|cn|net|org|edu|gov|info|io|me|cc|co|top|xyz|hk|tw|jp|vip)"
_OPEN = r"[(\[{<【]"
_CLOSE = r"[)\]}>】]"
_AT = (
    rf"(?:[ ]*{_OPEN}[ ]*(?i:at)[ ]*{_CLOSE}[ ]*|[ ]+(?i:at)[ ]+|[ ]*(?:艾特|圈a)[ ]*"
    r"|[ ]+@[ ]*|[ ]*@[ ]+)"
)
_DOT = rf"(?:[ ]*{_OPEN}[ ]*(?i:dot)[ ]*{_CLOSE}[ ]*|[ ]+(?i:dot)[ ]+|[ ]*点[ ]*|\.)"
_EMAIL_SPELLED = re.compile(
    rf"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*{_AT}"
    rf"[A-Za-z0-9-]+(?:{_DOT}[A-Za-z0-9-]+){{0,3}}?{_DOT}{_TLD}(?![A-Za-z0-9])"
)

# --- phone --------------------------------------------------------------------------------------
_MOBILE = re.compile(
    rf"(?<!\d)(?:(?:\+|00)?86{_GAP})?"
    rf"(?:1[3-9]\d(?:{_GAP}\d{{4}}{_GAP}\d{{4}}|\d{_GAP}\d{{3}}{_GAP}\d{{4}})"
    r"|1(?P<sep>[ .\-])[3-9](?:(?P=sep)\d){9})"
    r"(?!\d)(?![.\-]\d)"
)
_AREA = r"0(?:10|2\d|[3-9]\d{2})"
_EXTENSION = r"(?:[ ]?(?:转|分机|ext\.?|x|-)[ ]?\d{1,6})?"
_LANDLINE = re.compile(
    rf"(?:[(（]{_AREA}[)）][ \-]?|(?<!\d){_AREA}[ \-]?)[2-9]\d{{6,7}}(?!\d){_EXTENSION}{_NA}"
)

# --- ID and bank card ---------------------------------------------------------------------------
_ID18 = re.compile(rf"(?<!\d)[1-9](?:{_SPLIT}\d){{16}}{_SPLIT}[\dXx]{_NA}")
_ID15 = re.compile(rf"(?<!\d)[1-9]\d{{14}}{_NA}")  # no checksum: whole only
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# 16-19 digits: four groups of four (split or not), then up to three more.
_CARD = re.compile(r"(?<!\d)\d{4}(?:[\s\-]?\d{4}){3}(?P<tail>[\s\-]?\d{1,3})?(?!\d)")
_ORDER_CONTEXT = re.compile(
    r"(?:订单|单号|运单|快递|物流|编号|order)(?:编号|号码|号)?(?:是|为)?[^\u4e00-\u9fff]{0,6}$",
    re.IGNORECASE,
)
_CARD_CONTEXT = re.compile(
    r"(?:卡|card|账户|帐户|账号|帐号)(?:号码|号)?(?:是|为)?[^\u4e00-\u9fff]{0,6}$", re.IGNORECASE
)

# --- QQ and WeChat ------------------------------------------------------------------------------
_FILLER = r"(?:号码|号|账号|帐号)?[ \t]*(?:是|为)?[ \t]*[:：]?[ \t]*"
_QQ = re.compile(
    rf"(?:(?<![A-Za-z])(?i:qq)|扣扣|企鹅|(?<![A-Za-z])Q(?=号|[:：])){_FILLER}"
    r"(?P<id>[1-9]\d{4,11})(?!\d)"
)
_WECHAT = re.compile(
    r"(?:微信|薇信|威信|(?<![A-Za-z])(?P<latin>(?i:v信|vx|wx|weixin|wechat))|加[Vv]|[+＋][Vv])"
    r"(?:号码|号|账号|帐号|(?i:id))?(?P<gap>[ \t]*(?:是|为)?[ \t]*[:：]?[ \t]*)"
    r"(?!(?i:iphone|ipad|android|pay|app)(?![A-Za-z]))"
    r"(?P<id>[A-Za-z][A-Za-z0-9_-]{5,19}|\d{5,12})(?![A-Za-z0-9_-])"
)
_WXID = re.compile(r"(?<![A-Za-z0-9_])wxid_[A-Za-z0-9_-]{4,24}(?![A-Za-z0-9_-])")

# --- address ------------------------------------------------------------------------------------
# A name is a run of Chinese characters; the words that usually introduce an address (寄到,
# 住在, 地址是, ...) and a few particles are excluded so that they stay in the text.
_NAME_CHAR = (
    r"(?:(?![到寄在是我你他她的送请发往址给改为住收货这那条了还就也被把吧呢吗啊有])[\u4e00-\u9fff])"
)
_NUM = r"(?:\d{1,5}|[一二三四五六七八九十百零]{1,4})"
_PROVINCE = rf"{_NAME_CHAR}{{2,7}}?(?:省|自治区|特别行政区)"
_CITY = rf"{_NAME_CHAR}{{1,6}}?(?:市|自治州|地区|盟)"
_DISTRICT = rf"{_NAME_CHAR}{{1,6}}?(?:区|县|旗)"
_TOWN = rf"{_NAME_CHAR}{{1,8}}?(?:镇|乡|街道)"
_ADMIN = rf"(?:{_PROVINCE})?(?:{_CITY})?(?:{_DISTRICT})?(?:{_TOWN})?"
# At least two levels: enough to call a road or a village without a number an address.
_ADMIN2 = (
    rf"(?:{_PROVINCE}(?:{_CITY}(?:{_DISTRICT})?|{_DISTRICT})(?:{_TOWN})?|{_PROVINCE}{_TOWN}"
    rf"|{_CITY}(?:{_DISTRICT}(?:{_TOWN})?|{_TOWN})|{_DISTRICT}{_TOWN})"
)
# 道 alone ends many ordinary words (知道, 味道, 难道) that can precede a date like "5号".
_ROAD = rf"{_NAME_CHAR}{{1,10}}?(?:路|街|大道|巷|胡同|弄|(?<![知难味频报说晓管轨])道)"
_HOUSE = rf"(?:{_NUM}段)?[ ]?(?:{_NUM}[ ]?号|\d{{1,5}}[ ]?弄)(?:院|楼)?"
_ESTATE = rf"{_NAME_CHAR}{{1,10}}?(?:小区|花园|公寓|大厦|家园|新村|广场|苑|大院)"
_UNIT_PART = rf"(?:{_NUM}(?:号楼|栋|幢|单元|层|楼|室|号|房)|(?:[A-Za-z]|\d{{1,3}})座)"
# The last part may be a bare room number: 3栋2单元802.
_UNITS = rf"(?:[ \-]?{_UNIT_PART}){{1,6}}(?:-?\d{{1,5}})?"
_STRONG_UNIT = rf"{_NUM}(?:号楼|栋|幢|单元|室)"
_ROOM = rf"(?:{_NUM}(?:单元|室)|\d{{3,4}}(?:房|号)?(?![0-9号楼层]))"
_VILLAGE = rf"{_NAME_CHAR}{{2,6}}?村"
_VILLAGE_PART = rf"(?:{_NUM}(?:组|队|社|排|号|巷))"
_ADDRESS = re.compile(
    rf"(?:{_ADMIN}(?:"
    # 建国路88号(阳光小区)(3栋2单元501室)
    rf"{_ROAD}{_HOUSE}(?:{_ESTATE})?(?:{_UNITS})?"
    # 阳光花园3栋2单元501室: an estate needs a building, unit or room after it
    rf"|{_ESTATE}[ ]?(?=(?:[ \-]?{_UNIT_PART}){{0,5}}?[ \-]?{_STRONG_UNIT}){_UNITS}"
    # 张家庄村3组(15号)
    rf"|{_VILLAGE}(?:[ \-]?{_VILLAGE_PART}){{1,3}}"
    ")"
    # 北京市朝阳区建国路, 清苑县冉庄镇张家庄村: two levels, then a road or a village
    rf"|{_ADMIN2}(?:{_ROAD}|{_VILLAGE})"
    # 3栋2单元501室 with no name before it; a room or unit must end it (not 我住3号楼)
    rf"|(?<![0-9A-Za-z]){_NUM}(?:号楼|栋|幢)(?=(?:[ \-]?{_UNIT_PART}){{0,5}}?[ \-]?{_ROOM}){_UNITS}"
    rf")(?!\d)"
)


# Words that often come right before an address and are no part of one (a name may hold
# nearly any character, so they are cut off the front of a match instead of being excluded).
_ADDRESS_LEAD = re.compile(
    "(?:联系|公司|老家|家里|单位|学校|现在|目前|就是|还是|也是|位于|来自|搬到|回到|快递|包裹"
    "|麻烦|谢谢|您好|你好|一下|以前|之前|新的|旧的|顺丰|京东|邮政|帮忙|帮我)+"
)


# --- checks -------------------------------------------------------------------------------------
def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit() or ch in "Xx")


def _glued_ok(text: str, start: int) -> bool:
    """True unless letters glued to ``start`` make the number part of a code."""
    end = start
    while start > 0 and text[start - 1].isascii() and text[start - 1].isalpha():
        start -= 1
    return start == end or text[start:end].lower() in _CONTACT_WORDS


def _order_number(text: str, start: int) -> bool:
    return _ORDER_CONTEXT.search(text, max(0, start - 16), start) is not None


def _real_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _id18(match: re.Match[str], text: str) -> Span | None:
    digits = _digits(match.group(0))
    total = sum(int(d) * w for d, w in zip(digits[:17], _ID_WEIGHTS, strict=True))
    year, month, day = int(digits[6:10]), int(digits[10:12]), int(digits[12:14])
    valid = (
        _ID_CHECK[total % 11] == digits[17].upper()
        and 1800 <= year < 2100
        and _real_date(year, month, day)
    )
    return _digit_span(match, text) if valid else None


def _id15(match: re.Match[str], text: str) -> Span | None:
    digits = _digits(match.group(0))
    valid = _real_date(1900 + int(digits[6:8]), int(digits[8:10]), int(digits[10:12]))
    return _digit_span(match, text) if valid else None


def _digit_span(match: re.Match[str], text: str) -> Span | None:
    start = match.start()
    if _order_number(text, start) or not _glued_ok(text, start):
        return None
    return match.span()


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _card(match: re.Match[str], text: str) -> Span | None:
    start = match.start()
    if _order_number(text, start) or not _glued_ok(text, start):
        return None
    context = _CARD_CONTEXT.search(text, max(0, start - 16), start) is not None
    ends = [match.end()]
    if match["tail"] is not None:  # "... 7890 12" may be a card and a separate number
        ends.append(match.start("tail"))
    for end in ends:
        digits = _digits(text[start:end])
        if _luhn(digits) and (context or digits[0] in "3456"):
            return start, end
    return None


def _glued(match: re.Match[str], text: str) -> Span | None:
    return match.span() if _glued_ok(text, match.start()) else None


def _whole(match: re.Match[str], text: str) -> Span | None:
    return match.span()


def _group_id(match: re.Match[str], text: str) -> Span | None:
    return match.span("id")


def _wechat(match: re.Match[str], text: str) -> Span | None:
    glued = match["latin"] is not None and match.end("latin") == match.start("id")
    if glued and match["id"].isalpha():  # "wxpython" is a word, not wx and an id
        return None
    return match.span("id")


def _email(match: re.Match[str], text: str) -> Span | None:
    start, end = match.span()
    at = text.index("@", start)
    if "\u4e00" <= text[at - 1] <= "\u9fff":  # a Chinese local part: not the words before it
        lead = _EMAIL_LEAD.match(text, start, at)
        start = max(start if lead is None else lead.end(), at - 4)
        if start >= at:
            return None
    return start, end


def _address(match: re.Match[str], text: str) -> Span | None:
    start, end = match.span()
    lead = _ADDRESS_LEAD.match(text, start, end)
    return (start if lead is None else lead.end()), end


def _find(pattern: re.Pattern[str], text: str, check: Check) -> list[Span]:
    """Spans of ``pattern`` in ``text`` that ``check`` accepts; after a rejected match the
    search goes on from the next character, so a rejected candidate hides nothing."""
    spans: list[Span] = []
    pos = 0
    while (match := pattern.search(text, pos)) is not None:
        span = check(match, text)
        if span is not None and span[1] > span[0]:
            spans.append(span)
            pos = max(match.end(), match.start() + 1)
        else:
            pos = match.start() + 1
    return spans


def _candidates(text: str) -> dict[str, list[Span]]:
    cn = text.translate(_CN_DIGITS)
    cn_phones = [
        (s, e)
        for s, e in _find(_MOBILE, cn, _glued) + _find(_LANDLINE, cn, _glued)
        if any(ch in _CN_NUMERALS for ch in text[s:e])
    ]
    return {
        "email": _find(_EMAIL, text, _email) + _find(_EMAIL_SPELLED, text, _whole),
        "id_card": _find(_ID18, text, _id18) + _find(_ID15, text, _id15),
        "bank_card": _find(_CARD, text, _card),
        "phone": _find(_MOBILE, text, _glued) + _find(_LANDLINE, text, _glued) + cn_phones,
        "im_account": _find(_QQ, text, _group_id)
        + _find(_WECHAT, text, _wechat)
        + _find(_WXID, text, _whole),
        "address": _find(_ADDRESS, text, _address),
    }


def find_pii(text: str) -> list[PiiMatch]:
    """Non-overlapping PII matches in ``text``, ordered by position (for reports and tests)."""
    candidates = _candidates(text.translate(_FULL_WIDTH))
    taken: list[PiiMatch] = []
    for kind in _PRIORITY:
        # Longest first among overlapping candidates of one kind.
        for start, end in sorted(candidates[kind], key=lambda span: (span[0], -span[1])):
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
