"""Neutral customer-service inquiries, generated from templates.

No labelled neutral Chinese customer-service data ships in any package we can use, so the
neutral class is synthetic: questions about logistics, returns, invoices, sizes and the like,
worded without complaint or praise. Some carry a phone number or an e-mail address so that the
PII redaction downstream has something to do (all of them are made up).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from pipelines.data.text import normalize

Filler = Callable[[random.Random], str]


@dataclass(frozen=True)
class Pattern:
    """One sentence template and the topic it asks about."""

    topic: str
    template: str

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(
            name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None
        )


@dataclass(frozen=True)
class Inquiry:
    text: str
    topic: str
    pattern: int  # index into PATTERNS
    second_pattern: int | None = None  # the occasional second question's template

    @property
    def templates(self) -> tuple[str, ...]:
        """Every template the text was filled from, the main one first."""
        indices = (
            (self.pattern,) if self.second_pattern is None else (self.pattern, self.second_pattern)
        )
        return tuple(PATTERNS[index].template for index in indices)


def _patterns(topic: str, *templates: str) -> list[Pattern]:
    return [Pattern(topic, template) for template in templates]


PATTERNS: tuple[Pattern, ...] = tuple(
    _patterns(
        "logistics",
        "请问订单{order_no}现在物流到哪里了？",
        "我的快递单号是{tracking_no}，帮我查一下现在到哪了",
        "订单{order_no}发的是什么快递？",
        "能帮我看下{order_no}这个订单的物流信息吗？",
        "请问发{city}一般走哪家快递？",
        "可以指定发{courier}吗？",
        "物流显示已到{city}转运中心，大概还要多久能到？",
        "请问{product}是从哪个仓库发货的？",
        "快递到了可以放驿站吗？我{time_slot}不在家",
        "请问{courier}能送到{city}下面的乡镇吗？",
        "麻烦查一下订单{order_no}的快递单号",
        "大件商品是{courier}送货上门吗？",
    )
    + _patterns(
        "delivery_time",
        "请问今天下单什么时候能发货？",
        "{product}现在拍的话几天能到{city}？",
        "订单{order_no}预计什么时候送达？",
        "如果今天付款，{date}之前能送到{city}吗？",
        "请问周末发货吗？",
        "预售的{product}大概什么时候发货？",
        "下午{hour}点前下单当天能发出吗？",
        "请问可以预约{date}{time_slot}送货吗？",
        "发{city}一般需要几天？",
        "订单{order_no}显示待发货，一般多久发出？",
        "我想{date}收到，现在下单来得及吗？",
    )
    + _patterns(
        "returns",
        "请问{product}拆封了还能七天无理由退货吗？",
        "订单{order_no}我想申请退货，请问流程是怎样的？",
        "退货的运费是谁承担？",
        "退货寄回的地址是哪里？",
        "退款一般多久能到账？",
        "我已经用{courier}寄回了，单号{tracking_no}，请查收",
        "退货需要保留原包装吗？",
        "订单{order_no}里的{qty}件商品可以只退其中一件吗？",
        "请问退款是原路退回到{payment}吗？",
        "退货申请已经提交了，什么时候会审核？",
        "收到{days}天了还能退吗？",
        "赠品需要一起寄回吗？",
    )
    + _patterns(
        "exchange",
        "{apparel}尺码不太合适，可以换成{size}吗？",
        "订单{order_no}想换个颜色，换成{color}可以吗？",
        "换货需要我先寄回去吗？",
        "换货的运费怎么算？",
        "请问换货一般几天能处理好？",
        "我想换成{color}的，还有库存吗？",
        "换货可以换同价位的其他款式吗？",
        "可以直接换大一码吗？我平时穿{size}",
        "换货申请在哪里提交？",
        "换的新货发出后能告诉我单号吗？",
    )
    + _patterns(
        "invoice",
        "请问可以开增值税专用发票吗？",
        "发票抬头写{company}，税号{tax_id}",
        "电子发票会发到哪里？",
        "订单{order_no}的发票麻烦开一下",
        "麻烦把发票发到邮箱{email}",
        "发票可以开{product}的明细吗？",
        "个人可以开发票吗？抬头写个人就行",
        "我填的发票抬头有误，可以重新开吗？",
        "纸质发票会随货一起寄出吗？",
        "多个订单可以合并开一张发票吗？",
        "开票金额是按实付的{amount}元开吗？",
    )
    + _patterns(
        "size",
        "我身高{height}，体重{weight}，{apparel}穿什么码？",
        "{apparel}是偏大还是偏小？",
        "平时穿{size}，这款选哪个码合适？",
        "有尺码表吗？想看下{apparel}的具体尺寸",
        "{apparel}的{size}码胸围是多少？",
        "鞋子平时穿{shoe_size}码，这双建议拍多大？",
        "{apparel}有没有加大码？",
        "身高{child_height}的小孩穿哪个尺码？",
        "{size}码的衣长和袖长分别是多少？",
        "裤子腰围{waist}选哪个码？",
        "男女款的尺码一样吗？",
    )
    + _patterns(
        "stock",
        "{product}还有货吗？",
        "{color}的{size}码还有库存吗？",
        "{product}什么时候补货？",
        "{color}的{product}暂时缺货，大概多久到货？",
        "我想买{qty}个{product}，库存够吗？",
        "{city}的线下门店有{product}现货吗？",
        "这款{product}之后会补{color}的吗？",
        "到货了可以提醒我一下吗？",
        "{product}是现货还是预售？",
        "一次下单{qty}件可以吗？有没有限购？",
    )
    + _patterns(
        "address_change",
        "订单{order_no}的收货地址想改成{address}",
        "还没发货的话可以修改地址吗？",
        "收件人电话改成{phone}，麻烦了",
        "我搬家了，新地址是{address}，请帮我更新一下",
        "已经发货了还能改地址吗？",
        "可以改成寄到公司吗？地址是{address}",
        "收件人姓名想改一下，可以吗？",
        "地址里的城市选成了{city}，应该是{other_city}，可以修改吗？",
        "订单{order_no}能改成寄到{city}的驿站自提吗？",
        "修改地址会影响发货时间吗？",
    )
    + _patterns(
        "coupon",
        "{coupon}怎么领取？",
        "{coupon}可以和店铺满减一起用吗？",
        "下单时优惠券没有自动使用，现在还能用吗？",
        "请问{product}参加{event}活动吗？",
        "{event}的时候会有优惠吗？",
        "优惠券的有效期到什么时候？",
        "满{amount}元包邮吗？",
        "新用户有{coupon}吗？",
        "我有一张{coupon}，买{product}能用吗？",
        "{event}期间有价保吗？",
        "付款后领的券还能用在这个订单上吗？",
    )
    + _patterns(
        "warranty",
        "{appliance}的保修期是多久？",
        "{appliance}保修需要提供发票吗？",
        "是全国联保吗？我在{city}",
        "{device}过了保修期维修怎么收费？",
        "保修期内上门维修需要预约吗？",
        "{appliance}的电机单独保几年？",
        "可以购买延保服务吗？",
        "保修卡找不到了还能保修吗？",
        "订单{order_no}的{appliance}还在保修期内吗？",
        "{city}有售后维修点吗？",
    )
    + _patterns(
        "payment",
        "可以用{payment}付款吗？",
        "支持{payment}分{installments}期吗？",
        "订单{order_no}显示待付款，可以延长付款时间吗？",
        "可以找朋友代付吗？",
        "付款后多久显示支付成功？",
        "可以用公司账户转账付款吗？",
        "{city}能货到付款吗？",
        "订单金额{amount}元，可以用两张银行卡分开付吗？",
        "境外的信用卡能付款吗？",
        "用{payment}付款有手续费吗？",
    )
    + _patterns(
        "product_specs",
        "{appliance}的{attribute}是多少？",
        "{appliance}的额定功率是多少瓦？",
        "{product}是什么材质的？",
        "这款{product}有几种颜色？",
        "{product}的包装尺寸多大？",
        "{device}有中文说明书吗？",
        "{device}和上一代有什么区别？",
        "{gadget}充满电能用多久？",
        "{gadget}支持快充吗？",
        "{product}的产地是哪里？",
        "{food}的保质期是多久？",
        "{product}有{color}的吗？",
    )
    + _patterns(
        "membership",
        "怎么成为{member_level}会员？",
        "我的积分有{points}分，可以兑换什么？",
        "会员积分什么时候过期？",
        "{member_level}会员有哪些权益？",
        "会员生日当月有专属优惠吗？",
        "积分可以抵现吗？{points}积分能抵多少钱？",
        "在哪里查看我现在的会员等级？",
        "用手机号{phone}注册的会员，能绑定到这个账号吗？",
        "会员等级多久更新一次？",
        "付费会员可以随时取消吗？",
    )
    + _patterns(
        "installation",
        "{appliance}需要预约安装吗？",
        "安装师傅什么时候上门？我在{city}",
        "安装是免费的吗？有没有额外费用？",
        "{appliance}安装需要自己准备配件吗？",
        "可以约{date}{time_slot}安装吗？",
        "{appliance}送货和安装是同一天吗？",
        "订单{order_no}的{appliance}到了，怎么预约安装？",
        "{furniture}需要自己组装吗？",
        "能告诉我安装师傅的联系电话吗？",
        "高空安装需要另外收费吗？",
        "我自己安装的话会影响保修吗？",
    )
    + _patterns(
        "order_change",
        "订单{order_no}还没发货，可以取消吗？",
        "我想在订单{order_no}里再加{qty}件，可以合并发货吗？",
        "下单选的{color}想改成{other_color}，还来得及吗？",
        "两个订单能一起发货吗？",
        "订单备注怎么修改？",
        "在哪里查看我的历史订单？",
        "订单{order_no}可以拆开发到两个地址吗？",
        "我想把数量改成{qty}件，需要重新下单吗？",
        "取消订单后优惠券会退回吗？",
        "订单{order_no}显示已签收，可以查一下签收人吗？",
    )
    + _patterns(
        "gift_packaging",
        "可以帮忙包装成礼盒吗？",
        "可以附一张贺卡吗？",
        "发货单上可以不显示价格吗？",
        "送人的话能不放发票和价格单吗？",
        "{product}有配礼品袋吗？",
        "{date}之前能送到{city}吗？是送人的",
        "包装是原厂包装吗？",
        "可以用{courier}寄到{address}吗？",
    )
    + _patterns(
        "account_contact",
        "我的手机号是{phone}，麻烦客服回个电话",
        "联系电话{phone}，邮箱{email}，有进展麻烦通知我",
        "账号绑定的邮箱{email}想换一个，怎么操作？",
        "登录时收不到验证码，手机号是{phone}",
        "怎么修改账号绑定的手机号？",
        "能把{device}的电子说明书发到{email}吗？",
        "人工客服的工作时间是几点到几点？",
    )
)

TOPICS: tuple[str, ...] = tuple(dict.fromkeys(pattern.topic for pattern in PATTERNS))


def _pick(*values: str) -> Filler:
    return lambda rng: rng.choice(values)


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(count))


def _order_no(rng: random.Random) -> str:
    # yyyymmdd of the order, then eight digits: 2026110112345678
    day = date(2026, 10, 1) + timedelta(days=rng.randrange(61))
    return day.strftime("%Y%m%d") + _digits(rng, 8)


def _tracking_no(rng: random.Random) -> str:
    prefix = rng.choice(("SF", "YT", "ZTO", "JD", "YD", "JT", "EMS"))
    return prefix + _digits(rng, rng.choice((12, 13, 15)))


def _phone(rng: random.Random) -> str:
    number = rng.choice(("13", "15", "17", "18", "19")) + _digits(rng, 9)
    if rng.random() < 0.2:
        return f"{number[:3]}-{number[3:7]}-{number[7:]}"
    return number


def _email(rng: random.Random) -> str:
    name = rng.choice(
        ("zhangwei", "li.na", "wangfang", "liu_yang", "chenjing", "zhao.lei", "sunmei", "huangtao")
    )
    domain = rng.choice(("163.com", "qq.com", "126.com", "outlook.com", "gmail.com", "sina.com"))
    return f"{name}{rng.randrange(1, 1000)}@{domain}"


def _date(rng: random.Random) -> str:
    day = date(2026, 11, 1) + timedelta(days=rng.randrange(60))
    return rng.choice((f"{day.month}月{day.day}号", f"{day.month}月{day.day}日", f"{day:%m-%d}"))


def _address(rng: random.Random) -> str:
    city = rng.choice(_CITIES)
    district = rng.choice(("朝阳区", "浦东新区", "天河区", "南山区", "西湖区", "武侯区", "江汉区"))
    street = rng.choice(("中山路", "人民路", "解放路", "建设路", "和平路", "文化路", "长江路"))
    building = f"{rng.randrange(1, 30)}栋{rng.randrange(1, 30)}0{rng.randrange(1, 5)}室"
    return f"{city}{district}{street}{rng.randrange(1, 999)}号{building}"


def _company(rng: random.Random) -> str:
    word = rng.choice(("华信", "宏达", "启明", "嘉禾", "远航", "恒通", "新禾", "云杉"))
    trade = rng.choice(("科技", "贸易", "文化传媒", "信息技术", "电子商务", "餐饮管理"))
    return f"{rng.choice(_CITIES)}{word}{trade}有限公司"


def _tax_id(rng: random.Random) -> str:
    alphabet = string.digits + "ABCDEFGHJKLMNPQRTUWXY"
    return "91" + _digits(rng, 6) + "".join(rng.choice(alphabet) for _ in range(10))


_CITIES = (
    "北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆", "天津",
    "苏州", "长沙", "郑州", "青岛", "厦门", "昆明", "哈尔滨", "沈阳", "乌鲁木齐", "拉萨",
    "呼和浩特", "海口", "合肥", "福州", "南宁", "贵阳", "兰州",
)  # fmt: skip
_PRODUCTS = (
    "连衣裙", "运动鞋", "羽绒服", "蓝牙耳机", "空气炸锅", "扫地机器人", "电饭煲", "保温杯",
    "双肩包", "机械键盘", "显示器", "电动牙刷", "加湿器", "行李箱", "床上四件套", "儿童座椅",
    "台灯", "咖啡机", "吹风机", "净水器", "智能手表", "手机壳", "毛衣", "牛仔裤", "办公椅",
    "电热水壶", "微波炉", "充电宝", "路由器", "投影仪", "瑜伽垫", "不粘锅",
)  # fmt: skip
_COLORS = (
    "黑色", "白色", "灰色", "藏青色", "米色", "卡其色", "浅蓝色", "酒红色", "墨绿色", "粉色",
    "杏色", "银色",
)  # fmt: skip

SLOTS: Mapping[str, Filler] = {
    "order_no": _order_no,
    "tracking_no": _tracking_no,
    "phone": _phone,
    "email": _email,
    "date": _date,
    "address": _address,
    "company": _company,
    "tax_id": _tax_id,
    "city": _pick(*_CITIES),
    "other_city": _pick(*_CITIES),
    "product": _pick(*_PRODUCTS),
    "color": _pick(*_COLORS),
    "other_color": _pick(*_COLORS),
    "courier": _pick("顺丰", "中通", "圆通", "韵达", "申通", "京东物流", "邮政EMS", "极兔", "德邦"),
    "time_slot": _pick("上午", "下午", "晚上", "工作日白天", "周末"),
    "hour": _pick("3", "4", "5", "6"),
    "qty": _pick("2", "3", "4", "5", "10", "20"),
    "days": _pick("3", "5", "6", "8", "10", "15"),
    "amount": _pick("49", "99", "129", "199", "299", "399", "588", "1299", "2499"),
    "payment": _pick("微信支付", "支付宝", "银行卡", "信用卡", "花呗", "云闪付"),
    "installments": _pick("3", "6", "12", "24"),
    "apparel": _pick(
        "连衣裙", "羽绒服", "毛衣", "牛仔裤", "衬衫", "卫衣", "风衣", "西装外套", "睡衣", "T恤"
    ),
    "size": _pick("S", "M", "L", "XL", "XXL", "XXXL", "160/84A", "165/88A", "170/92A", "175/96A"),
    "shoe_size": _pick("35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45"),
    "waist": _pick("1尺9", "2尺", "2尺1", "2尺2", "2尺4", "2尺6", "2尺8"),
    "height": lambda rng: rng.choice(
        (f"{rng.randrange(150, 191)}cm", f"1米{rng.randrange(50, 91)}")
    ),
    "weight": lambda rng: rng.choice((f"{rng.randrange(42, 96)}kg", f"{rng.randrange(90, 190)}斤")),
    "child_height": lambda rng: f"{rng.randrange(90, 151)}cm",
    "coupon": _pick(
        "满200减20的券",
        "满300减30的券",
        "满99减10的券",
        "新人券",
        "店铺券",
        "无门槛5元券",
        "品类券",
        "跨店满减券",
    ),
    "event": _pick("双十一", "双十二", "年货节", "618", "店庆", "会员日"),
    "appliance": _pick(
        "洗衣机",
        "空调",
        "冰箱",
        "热水器",
        "油烟机",
        "净水器",
        "洗碗机",
        "电视",
        "燃气灶",
        "扫地机器人",
    ),
    "gadget": _pick("蓝牙耳机", "智能手表", "充电宝", "电动牙刷", "扫地机器人", "剃须刀"),
    "food": _pick("茶叶礼盒", "坚果礼盒", "咖啡豆", "蜂蜜", "牛肉干", "月饼礼盒"),
    "furniture": _pick("书桌", "衣柜", "办公椅", "沙发", "床架", "鞋柜", "书架"),
    "attribute": _pick("尺寸", "重量", "功率", "容量", "噪音", "额定电压"),
    "device": _pick(
        "蓝牙耳机",
        "空气炸锅",
        "扫地机器人",
        "电饭煲",
        "机械键盘",
        "显示器",
        "电动牙刷",
        "加湿器",
        "咖啡机",
        "吹风机",
        "净水器",
        "智能手表",
        "电热水壶",
        "微波炉",
        "路由器",
        "投影仪",
    ),
    "member_level": _pick("银卡", "金卡", "铂金", "钻石"),
    "points": _pick("300", "500", "1000", "2000", "5000"),
}

# Decorations: weights favour the plain form; none of them carries emotion.
_PREFIXES = (("", 12), ("你好，", 3), ("您好，", 3), ("在吗？", 1), ("亲，", 2),
             ("客服你好，", 1), ("hi，", 1), ("打扰一下，", 1), ("咨询一下，", 1))  # fmt: skip
_SUFFIXES = (("", 12), ("谢谢", 3), ("谢谢。", 2), ("麻烦了", 2), ("麻烦帮忙看一下", 1),
             (" 🙏", 1), (" 🤔", 1), (" 📦", 1), ("~", 1))  # fmt: skip
_TERMINAL = ("？", "?", "。", "！", "!", "~")
_CONTACTS = ("（联系电话{phone}）", "有问题可以打我电话{phone}", "我的邮箱是{email}")
# Contact details that customers add to complaints and praise as well: personal data is not a
# sign of a neutral message (bootstrap adds them to a share of the reviews).
CONTACT_TEMPLATES = (
    *_CONTACTS,
    "我电话{phone}",
    "手机{phone}，邮箱{email}",
    "收货地址：{address}",
    "寄到{address}的",
)


def fill(template: str, rng: random.Random) -> str:
    """The template with every slot filled by a value drawn from ``rng``."""
    values = {name: SLOTS[name](rng) for name in Pattern("", template).slots}
    return template.format(**values)


def _weighted(options: Sequence[tuple[str, int]], rng: random.Random) -> str:
    texts, weights = zip(*options, strict=True)
    return rng.choices(texts, weights=weights)[0]


def _then(text: str, more: str) -> str:
    """``more`` after ``text``, with a comma unless ``text`` already ends a sentence."""
    if not more or more[0] in " ~（" or text.endswith(_TERMINAL):
        return text + more
    return f"{text}，{more}"


def _decorate(text: str, rng: random.Random) -> str:
    # Punctuation varies the way people type: half-width "?" or none at all.
    roll = rng.random()
    if roll < 0.15:
        text = text.replace("？", "?")
    elif roll < 0.25 and text.endswith("？"):
        text = text[:-1]
    text = _then(_weighted(_PREFIXES, rng) + text, _weighted(_SUFFIXES, rng))
    if rng.random() < 0.04:
        text = _then(text, fill(rng.choice(_CONTACTS), rng))
    return text


def _one(rng: random.Random) -> Inquiry:
    index = rng.randrange(len(PATTERNS))
    pattern = PATTERNS[index]
    text = fill(pattern.template, rng)
    second = None
    if rng.random() < 0.08:
        # A second question on another topic makes the occasional long message.
        if not text.endswith(_TERMINAL):
            text += "。"
        second = rng.randrange(len(PATTERNS))
        text += rng.choice(("另外，", "还有，", "顺便问下，")) + fill(
            PATTERNS[second].template, rng
        )
    return Inquiry(_decorate(text, rng), pattern.topic, index, second)


def generate_inquiry_records(n: int, seed: int) -> list[Inquiry]:
    """``n`` inquiries distinct after normalisation, with their topic; deterministic per seed.

    The first ``k`` records of a call with ``n > k`` equal those of a call with ``k``.
    """
    if n < 0:
        raise ValueError(f"number of inquiries must be >= 0, got {n}")
    rng = random.Random(f"inquiries:{seed}")
    seen: set[str] = set()
    found: list[Inquiry] = []
    attempts = 0
    # The template space holds millions of texts; the cap only guards against a runaway loop.
    while len(found) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could not generate {n} distinct inquiries (got {len(found)})")
        inquiry = _one(rng)
        key = normalize(inquiry.text)
        if key not in seen:
            seen.add(key)
            found.append(inquiry)
    return found


def generate_inquiries(n: int, seed: int) -> list[str]:
    """``n`` neutral inquiry texts, distinct after normalisation; deterministic per seed."""
    return [inquiry.text for inquiry in generate_inquiry_records(n, seed)]
