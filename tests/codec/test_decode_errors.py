"""Every kind of bad payload is an EventDecodeError naming the problem and where it is.

(That a worker dead-letters each of them at once is in test_dead_letters.py.)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from dramatiq_eventbus import EventDecodeError
from dramatiq_eventbus.codecs import CustomTypes, TypedCodec, type_name

from .model import Status


@dataclass(frozen=True)
class Item:
    sku: str
    price: Decimal


@dataclass(frozen=True)
class Cart:
    cart_id: str
    items: list[Item]
    status: Status = Status.NEW
    coupons: dict[str, int] = field(default_factory=dict)
    extra: Any = None

    def __post_init__(self) -> None:
        if not self.cart_id:
            raise ValueError("cart_id must not be empty")


class Tag:
    def __init__(self, text: str) -> None:
        self.text = text


@dataclass(frozen=True)
class Tagged:
    tag: Tag


CART = type_name(Cart)
ITEM = type_name(Item)


def cart(**fields: Any) -> dict[str, Any]:
    """A good Cart payload, with some fields replaced."""
    good = {
        "$type": CART,
        "cart_id": "c-1",
        "items": [
            {"$type": ITEM, "sku": "a", "price": {"$decimal": "1.00"}},
            {"$type": ITEM, "sku": "b", "price": {"$decimal": "2.00"}},
        ],
    }
    return {**good, **fields}


def item(**fields: Any) -> dict[str, Any]:
    return {"$type": ITEM, "sku": "x", "price": {"$decimal": "1"}, **fields}


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


#: (payload, what the error message must say). The module named in "this:Zen" prints the
#: Zen of Python when imported: decoding must not import it.
BAD_PAYLOADS: list[tuple[Any, str]] = [
    ("a string", "an event payload is a JSON object with a $type, not a str"),
    ([CART], "not a list"),
    ({"cart_id": "c-1"}, "holds a dict, which is not an event class"),
    ({"$type": "os:system", "command": "touch /tmp/x"}, "unknown type 'os:system'"),
    ({"$type": "this:Zen"}, "unknown type 'this:Zen'"),
    ({"$type": 5}, "unknown type 5"),
    (item(), "holds a Item, which is not an event class"),
    (cart(evil=1), "Cart has no field 'evil'"),
    ({"$type": CART, "items": []}, "Cart is missing field cart_id"),
    (cart(cart_id=""), "cannot build Cart: ValueError: cart_id must not be empty"),
    (cart(cart_id=7), "Cart.cart_id: expected str, got int"),
    (cart(items={"$tuple": []}), "Cart.items: expected list[Item], got a $tuple object"),
    (cart(items=[item(), "x"]), "Cart.items[1]: expected Item, got str"),
    (cart(items=[item(), item(price="1.5")]), "Cart.items[1].price: expected Decimal, got str"),
    (cart(items=[item(price={"$decimal": "one"})]), "Cart.items[0].price: bad $decimal 'one'"),
    (cart(items=[item(price={"$decimal": 1.5})]), "Cart.items[0].price: $decimal must hold a string, not float"),
    (cart(items=[item(price={"$decimal": "1", "x": 1})]), "Cart.items[0].price: unexpected key 'x' in a $decimal"),
    (cart(items=[item(price={"$eval": "__import__('os')"})]), "Cart.items[0].price: unknown type tag '$eval'"),
    (cart(items=[{"$type": "builtins:object"}]), "Cart.items[0]: unknown type 'builtins:object'"),
    (cart(coupons={"a": "1"}), "Cart.coupons['a']: expected int, got str"),
    (cart(coupons={"$map": [[1, 1]]}), "Cart.coupons[1]: key: expected str, got int"),
    (cart(status={"$enum": type_name(Status), "name": "LOST"}), "Cart.status: Status has no member 'LOST'"),
    (cart(status={"$enum": type_name(Status), "value": "lost"}), "Cart.status: 'lost' is not a valid Status"),
    (cart(status={"$enum": "shop:Other", "name": "X"}), "Cart.status: unknown Enum 'shop:Other'"),
    (cart(status="NEW"), "Cart.status: expected Status, got str"),
    (cart(extra={"$datetime": "yesterday"}), "Cart.extra: bad $datetime 'yesterday'"),
    (cart(extra={"$datetime": "2026-01-01T00:00:00", "tz": "../../etc/passwd"}), "bad time zone '../../etc/passwd'"),
    (cart(extra={"$datetime": "2026-01-01T00:00:00", "tz": "Mars/Olympus"}), "unknown time zone 'Mars/Olympus'"),
    (cart(extra={"$datetime": "2026-01-01T00:00:00", "fold": 2}), "bad fold 2"),
    (cart(extra={"$int": "12345"}), "bad $int '12345'"),
    (cart(extra={"$bytes": "not base64!"}), "Cart.extra: bad $bytes: not base64"),
    (cart(extra={"$uuid": "not-a-uuid"}), "bad $uuid"),
    (cart(extra={"$fraction": "1/0"}), "the denominator is 0"),
    # 1.6 MB of hex took 8.4 s of gcd holding the GIL: refused by its length, before any arithmetic.
    (cart(extra={"$fraction": "0x" + "f" * 1_600_000 + "/0x" + "e" * 1_600_000}), "bad $fraction '0xffffffff"),
    (cart(extra={"$fraction": "1/0x" + "e" * 4097}), "bad $fraction '1/0xeeee"),
    (cart(extra={"$timedelta": "forever"}), "bad $timedelta 'forever'"),
    (cart(extra={"$map": [[[1], "list as key"]]}), "$map key 0 is a list, which cannot be a key"),
    (cart(extra={"$map": [[1]]}), "$map item 0 is not a [key, value] pair"),
    (cart(extra={"$set": [[1]]}), "Cart.extra: bad $set object: TypeError: unhashable type: 'list'"),
    # Ints that differ by a multiple of 2**61 - 1 hash alike: a set of them is a quadratic build.
    (cart(extra={"$set": [n * (2**61 - 1) for n in range(100)]}), "$set holds 100 members that hash alike"),
    (cart(extra={"$frozenset": [n * (2**61 - 1) for n in range(17)]}), "$frozenset holds 17 members that hash"),
    (cart(extra={"$map": [[n * (2**61 - 1), n] for n in range(50)]}), "$map holds 50 members that hash alike"),
    # Below zero, and as floats, they collide too; mixed with ints small enough to be told apart in C.
    (cart(extra={"$set": [1, 2, 3] + [-n * (2**61 - 1) for n in range(20)]}), "$set holds 20 members that hash"),
    (cart(extra={"$set": [2.0 ** (61 * n) for n in range(17)]}), "$set holds 17 members that hash alike"),
    (cart(extra={"$tuple": "abc"}), "expected a JSON list, got str"),
    (cart(extra={"$set": "abc"}), "expected a JSON list, got str"),
    (cart(extra={"$set": [1, 2, {"$decimal": "x"}]}), "Cart.extra[2]: bad $decimal 'x'"),
    # A failure deep in lists of scalars and containers names each list's index.
    (cart(extra=[1, "a", [], [2, {}, {"$decimal": "x"}], 3]), "Cart.extra[3][2]: bad $decimal 'x'"),
    (cart(extra={"k": [[], [[1, {"$decimal": "x"}]]]}), "Cart.extra['k'][1][0][1]: bad $decimal 'x'"),
    (cart(extra={"$custom": "billing:Money", "value": 1}), "unknown type 'billing:Money'"),
    (cart(extra={"a": 1, "$type": "os:system"}), "Cart.extra: unknown type 'os:system'"),  # a tag not in first place
    (cart(extra={"$pickle": "gASV", "hmac": "00"}), "unknown type tag '$pickle'"),
    ({"$pickle": "gASVBQAAAAAAAABLAS4=", "hmac": "0" * 64}, "$pickle payload, refused"),
    (cart(extra=nested_list(5000)), "payload nested too deeply"),
]


@pytest.mark.parametrize(("payload", "problem"), BAD_PAYLOADS, ids=[problem for _, problem in BAD_PAYLOADS])
def test_a_bad_payload_is_a_decode_error_naming_the_problem_and_its_path(payload: Any, problem: str) -> None:
    codec = TypedCodec([Cart])
    with pytest.raises(EventDecodeError) as raised:
        codec.decode(payload)
    assert problem in str(raised.value)
    assert "this" not in sys.modules  # the module a payload named was never imported


def test_a_good_payload_decodes() -> None:
    assert TypedCodec([Cart]).decode(cart()) == Cart("c-1", [Item("a", Decimal("1.00")), Item("b", Decimal("2.00"))])


def _decode_tag(text: Any) -> Any:
    if text == "":
        return "not a Tag"
    return Tag(text.upper())


def test_a_registered_decode_function_that_fails_or_lies_is_a_decode_error() -> None:
    types_ = CustomTypes()
    types_.register(Tag, encode=lambda tag: tag.text, decode=_decode_tag)
    codec = TypedCodec([Tagged], types_)
    payload = codec.encode(Tagged(Tag("x")))
    payload["tag"]["value"] = ""
    with pytest.raises(EventDecodeError, match=r"Tagged\.tag: Tag's decode function returned a str"):
        codec.decode(payload)
    payload["tag"]["value"] = ["x"]
    with pytest.raises(EventDecodeError, match=r"Tagged\.tag: cannot build Tag: AttributeError"):
        codec.decode(payload)


@dataclass(frozen=True)
class Counted:
    count: int
    tag: Tag | None = None


def test_a_tagged_object_a_field_cannot_hold_is_refused_before_it_is_decoded() -> None:
    decoded: list[Any] = []
    types_ = CustomTypes()
    types_.register(Tag, encode=lambda tag: tag.text, decode=lambda text: decoded.append(text) or Tag(text))
    codec = TypedCodec([Counted], types_)
    payload = codec.encode(Counted(1, Tag("x")))
    assert codec.decode(payload).tag.text == "x"
    assert decoded == ["x"]
    decoded.clear()
    # A Tag where an int is declared: its decode function is never run, nor is a $fraction's gcd.
    for misfit, tag in (
        ({"$custom": payload["tag"]["$custom"], "value": "y"}, "$custom"),
        ({"$fraction": "1/3"}, "$fraction"),
    ):
        with pytest.raises(EventDecodeError, match=rf"Counted\.count: expected int, got a \{tag} object"):
            codec.decode({**payload, "count": misfit})
    assert decoded == []
    # What the annotation admits still decodes: a big int, and None or a Tag where Tag | None is declared.
    assert codec.decode({**payload, "count": {"$int": hex(1 << 5000)}, "tag": None}).count == 1 << 5000


FORGED = "x\nERROR forged log record " + "y" * 100_000


@pytest.mark.parametrize(
    "payload",
    [
        cart(**{FORGED: 1}),  # a field name
        cart(extra={FORGED: {"$type": "os:system"}}),  # a path step
        cart(extra={"$type": FORGED}),
        cart(extra={FORGED: 1}) | {"coupons": {FORGED: "not an int"}},
        cart(extra={"$enum": FORGED, "value": 1}),
        cart(extra={"$custom": FORGED, "value": 1}),
        cart(extra={"$datetime": "2026-01-01T00:00:00", "tz": FORGED}),
        cart(extra={"$uuid": "x", FORGED: 1}),
        cart(extra={FORGED[:2]: {"$" + FORGED: 1}}),
    ],
    ids=["field", "path", "type", "key of a checked map", "enum", "custom", "zone", "extra key", "tag"],
)
def test_a_value_from_the_payload_reaches_the_error_escaped_and_cut(payload: Any) -> None:
    with pytest.raises(EventDecodeError) as raised:
        TypedCodec([Cart]).decode(payload)
    text = str(raised.value)
    assert "\n" not in text and "\\n" in text
    assert len(text) < 1000, text[:200]
