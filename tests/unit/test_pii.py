from __future__ import annotations

import pytest

from pipelines.data.pii import PLACEHOLDERS, PiiMatch, find_pii, redact, redact_with_counts

# 11010519491231002X, 440524188001010014 and 110101199003074477 have valid checksums;
# 320311198505152817 does not (its checksum digit would be 6).
REDACTED = [
    ("我的手机号是13812345678，请尽快联系", "我的手机号是<PHONE>，请尽快联系"),
    ("电话 +86 138-1234-5678 谢谢", "电话 <PHONE> 谢谢"),
    ("8613912345678", "<PHONE>"),
    ("0086 15012345678", "<PHONE>"),
    ("手机：138 1234 5678", "手机：<PHONE>"),
    ("tel:19912345678.", "tel:<PHONE>."),
    ("座机010-62345678转123", "座机<PHONE>"),
    ("tel: 0571 88886666-8001", "tel: <PHONE>"),
    ("(0571)88886666", "<PHONE>"),
    ("（021）52345678找王经理", "<PHONE>找王经理"),
    ("0755-2345678", "<PHONE>"),
    ("邮箱abc.d@qq.com谢谢", "邮箱<EMAIL>谢谢"),
    ("我的邮箱是 zhang.san+shop@example.com.cn", "我的邮箱是 <EMAIL>"),
    ("12345678@163.com", "<EMAIL>"),
    ("身份证11010519491231002X", "身份证<ID>"),
    ("身份证号440524188001010014，姓名张三", "身份证号<ID>，姓名张三"),
    ("证件号 110101199003074477", "证件号 <ID>"),
    ("老身份证 110105491231002", "老身份证 <ID>"),
    ("请寄到北京市朝阳区建国路88号", "请寄到<ADDRESS>"),
    ("地址：广东省深圳市南山区科技园南区深南大道10000号腾讯大厦", "地址：<ADDRESS>"),
    ("退货地址是浙江省杭州市余杭区文一西路969号", "退货地址是<ADDRESS>"),
    ("成都市武侯区人民南路四段1号", "<ADDRESS>"),
    ("上海市长宁区愚园路1088弄", "<ADDRESS>"),
    ("我家住在阳光花园3栋2单元501室", "我家住在<ADDRESS>"),
    ("送到3栋2单元501室", "送到<ADDRESS>"),
    ("杭州市西湖区文三路 478 号华星时代广场A座1201室", "<ADDRESS>"),
    (
        "联系人张三 13912345678 地址上海市徐汇区漕溪北路 88 号",
        "联系人张三 <PHONE> 地址<ADDRESS>",
    ),
]

KEPT = [
    "订单号202411051234567890还没到",  # 18-digit order id
    "订单13812345678901234567",  # long run that starts like a mobile number
    "单号 1234567890123456 麻烦查一下",
    "订单号320311198505152817还没发货",  # ID-shaped, bad checksum
    "订单号：110101199003074477",  # valid checksum, but named as an order number
    "快递单号SF1234567890123",
    "运单号YT13812345678",  # mobile-shaped digits inside a tracking number
    "客服电话400-820-8820",  # business hotline, not personal
    "我11月5号下的单，怎么还没到",
    "2024-11-05 13:45下单",
    "2024年11月5号 星期二",
    "我知道5号能到",
    "iPhone 15 Pro Max 256G多少钱",
    "价格是299.00元，买了3件",
    "¥13800 太贵了",
    "10元3件，满199减20",
    "型号ABC-1381234567",
    "第12345678期",
    "我住3号楼",
    "这条路5号才修好",
    "我在北京市",  # a city alone identifies nobody
    "屏幕 6.1 英寸，电池 4000mAh",
]


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_redacts_personal_data(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_keeps_order_numbers_prices_dates_and_models(text: str) -> None:
    assert redact(text) == text
    assert find_pii(text) == []


def test_find_pii_reports_kind_and_span_in_order() -> None:
    text = "电话13812345678，邮箱a@b.cn，身份证11010519491231002X"
    matches = find_pii(text)
    assert [match.kind for match in matches] == ["phone", "email", "id_card"]
    assert [text[start:end] for _, (start, end) in matches] == [
        "13812345678",
        "a@b.cn",
        "11010519491231002X",
    ]
    assert all(isinstance(match, PiiMatch) for match in matches)


def test_email_digits_are_not_a_phone() -> None:
    assert [m.kind for m in find_pii("13812345678@qq.com")] == ["email"]


def test_checksum_decides_between_id_and_plain_number() -> None:
    assert redact("号码 11010519491231002X") == "号码 <ID>"
    assert redact("号码 110105194912310021") == "号码 110105194912310021"  # checksum is X


def test_invalid_birth_date_is_not_an_id() -> None:
    assert redact("编号 110105491331002") == "编号 110105491331002"  # month 13


def test_redact_is_idempotent_and_placeholders_are_documented() -> None:
    text = "手机13812345678 邮箱a@b.com 地址北京市朝阳区建国路88号"
    once, matches = redact_with_counts(text)
    assert redact(once) == once
    assert {m.kind for m in matches} == {"phone", "email", "address"}
    assert set(PLACEHOLDERS.values()) == {"<PHONE>", "<EMAIL>", "<ID>", "<ADDRESS>"}


def test_full_width_digits_are_recognised() -> None:
    assert redact("手机１３８１２３４５６７８") == "手机<PHONE>"
