"""nslab.record gives what @dataclass(frozen=True) gives: init, defaults, repr, eq, hash, frozen, replace, and the
standard library's dataclasses functions on a record."""

import dataclasses

import pytest

from nslab.record import FrozenInstanceError, field, fields, record, replace


@record
class Base:
    ns: str
    reason: str = field(default="", compare=False)


@record
class Child(Base):
    name: str = ""
    tags: tuple = ()
    extra: dict = field(default_factory=dict, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class DBase:
    ns: str
    reason: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass(frozen=True)
class DChild(DBase):
    name: str = ""
    tags: tuple = ()
    extra: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


def test_same_as_dataclass():
    for args, kw in [(("a",), {}), (("a", "r", "n"), {"tags": (1,)}), ((), {"ns": "x", "name": "y"})]:
        r, d = Child(*args, **kw), DChild(*args, **kw)
        assert repr(r) == repr(d).replace("DChild", "Child")
        assert dataclasses.astuple(r) == dataclasses.astuple(d)
        assert hash(r) == hash(d)
    assert Child("a", "r1") == Child("a", "r2") and hash(Child("a", "r1")) == hash(Child("a", "r2"))
    assert Child("a") != Child("b") and Child("a") != Base("a")
    assert [f.name for f in fields(Child)] == [f.name for f in dataclasses.fields(DChild)]
    assert [f.name for f in dataclasses.fields(Child("a"))] == ["ns", "reason", "name", "tags", "extra"]
    assert Child("a").extra is not Child("a").extra
    assert Child.__match_args__ == DChild.__match_args__


def test_frozen_and_errors():
    r = Child("a")
    with pytest.raises(FrozenInstanceError):
        r.name = "x"
    with pytest.raises(AttributeError):
        del r.ns
    for args, kw in [((), {}), (("a", "b", "c", "d", "e", "f"), {}), (("a",), {"ns": "b"}), (("a",), {"nope": 1})]:
        with pytest.raises(TypeError):
            Child(*args, **kw)
    with pytest.raises(TypeError, match="non-default argument"):
        @record
        class Bad(Base):
            late: str
    with pytest.raises(ValueError, match="mutable default"):
        @record
        class Mutable:
            items: list = []


def test_replace_both_ways():
    r = Child("a", name="n")
    assert replace(r, name="m") == Child("a", name="m") == dataclasses.replace(r, name="m")
    assert dataclasses.is_dataclass(r) and dataclasses.asdict(r)["name"] == "n"


def test_mutable_record():
    @record(frozen=False)
    class Result:
        ok: bool = True
        items: list = field(default_factory=list)

    r = Result()
    r.ok = False
    r.items.append(1)
    assert r == Result(False, [1]) and Result.__hash__ is None
