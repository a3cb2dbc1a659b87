"""Records: the classes the model, the plan and the API results are made of, as @dataclass makes them, cheaply.

`@record` gives a class what `@dataclass(frozen=True)` gives it (`@record(frozen=False)`: `@dataclass`): an
__init__ taking the annotated fields in order, positionally or by name, with their defaults; __repr__; __eq__
and (frozen) __hash__ over the compared fields; a frozen instance refuses assignment. `field`, `fields` and
`replace` work as the standard library's do, and so do `dataclasses.fields`, `replace`, `asdict` and
`is_dataclass` on a record (what they read is made on first use).

Why: @dataclass writes each method as source text and compiles it, about 0.4 ms a class when the module is
imported, and the standard library's dataclasses module imports inspect; with ~60 such classes on the path of
`nslab validate` and `nslab plan`, that was a third of their start-up. These methods are shared functions
that read the class's field list instead: nothing is compiled, and a class costs a few microseconds.
"""

MISSING = type("MissingType", (), {"__repr__": lambda self: "MISSING"})()
_MUTABLE = (list, dict, set)


class FrozenInstanceError(AttributeError):
    """Assigning to (or deleting) a field of a frozen record."""


class Field:
    """One field: its name, default (or default_factory), and whether __eq__/__hash__ and __repr__ use it."""

    __slots__ = ("name", "type", "default", "default_factory", "compare", "repr")

    def __init__(self, default=MISSING, default_factory=MISSING, compare=True, repr=True):  # noqa: A002
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = self.type = None
        self.default, self.default_factory, self.compare, self.repr = default, default_factory, compare, repr

    def __repr__(self):
        return f"Field(name={self.name!r}, default={self.default!r}, compare={self.compare}, repr={self.repr})"


def field(*, default=MISSING, default_factory=MISSING, compare=True, repr=True):  # noqa: A002
    return Field(default, default_factory, compare, repr)


def fields(obj) -> tuple:
    """The record's (or record class's) fields, in __init__ order. Raises TypeError for anything else."""
    try:
        return obj.__record_fields__
    except AttributeError:
        raise TypeError("must be called with a record type or instance") from None


def replace(obj, /, **changes):
    """A new record like obj with the given fields changed (through __init__, as dataclasses.replace)."""
    values = {f.name: obj.__dict__[f.name] for f in fields(obj)}
    values.update(changes)
    return obj.__class__(**values)


def record(cls=None, /, *, frozen=True):
    """Make cls a record (see the module); `@record` or `@record(frozen=False)`."""
    def wrap(cls):
        return _make(cls, frozen)
    return wrap if cls is None else wrap(cls)


def _make(cls, frozen):
    found = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get("__record_fields__", ()):
            found[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(value)
        if f.default.__class__ in _MUTABLE:
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed: "
                             "use default_factory")
        f.name, f.type = name, annotation
        if isinstance(value, Field):
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        found[name] = f
    all_fields = tuple(found.values())
    seen_default = False
    for f in all_fields:
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        seen_default = seen_default or has_default
    cls.__record_fields__ = all_fields
    cls.__record_names__ = tuple(f.name for f in all_fields)
    cls.__record_index__ = frozenset(cls.__record_names__)
    cls.__record_compare__ = tuple(f.name for f in all_fields if f.compare)
    cls.__record_repr__ = tuple(f.name for f in all_fields if f.repr)
    cls.__record_fill__ = tuple(f for f in all_fields if f.default is not MISSING or
                                f.default_factory is not MISSING)
    cls.__record_post__ = getattr(cls, "__post_init__", None)
    for name, method in (("__init__", _init), ("__repr__", _repr), ("__eq__", _eq),
                         ("__match_args__", cls.__record_names__)):
        if name not in cls.__dict__:
            setattr(cls, name, method)
    if frozen:
        if "__hash__" not in cls.__dict__ or cls.__dict__["__hash__"] is None:
            cls.__hash__ = _hash
        cls.__setattr__ = _frozen_setattr
        cls.__delattr__ = _frozen_delattr
    elif cls.__dict__.get("__hash__") is None:
        cls.__hash__ = None  # as @dataclass: mutable and compared by value, so not hashable
    if "__dataclass_fields__" not in cls.__dict__:
        cls.__dataclass_fields__ = _DataclassFields()
    return cls


def _init(self, *args, **kwargs):
    cls = self.__class__
    names = cls.__record_names__
    if len(args) > len(names):
        raise TypeError(f"{cls.__qualname__}.__init__() takes {len(names) + 1} positional arguments but "
                        f"{len(args) + 1} were given")
    d = self.__dict__
    d.update(zip(names, args))
    if kwargs:
        index = cls.__record_index__
        for name, value in kwargs.items():
            if name not in index:
                raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument {name!r}")
            if name in d:
                raise TypeError(f"{cls.__qualname__}.__init__() got multiple values for argument {name!r}")
            d[name] = value
    if len(d) < len(names):
        for f in cls.__record_fill__:
            if f.name not in d:
                d[f.name] = f.default if f.default_factory is MISSING else f.default_factory()
        if len(d) < len(names):
            missing = [n for n in names if n not in d]
            raise TypeError(f"{cls.__qualname__}.__init__() missing {len(missing)} required argument"
                            f"{'s' if len(missing) > 1 else ''}: " + ", ".join(repr(n) for n in missing))
    if cls.__record_post__ is not None:
        self.__post_init__()


def _repr(self):
    d = self.__dict__
    return f"{self.__class__.__qualname__}(" + ", ".join(f"{n}={d[n]!r}" for n in self.__record_repr__) + ")"


def _eq(self, other):
    if other.__class__ is self.__class__:
        a, b, names = self.__dict__, other.__dict__, self.__record_compare__
        return tuple(a[n] for n in names) == tuple(b[n] for n in names)
    return NotImplemented


def _hash(self):
    d = self.__dict__
    return hash(tuple(d[n] for n in self.__record_compare__))


def _frozen_setattr(self, name, value):
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self, name):
    raise FrozenInstanceError(f"cannot delete field {name!r}")


class _DataclassFields:
    """__dataclass_fields__ for the standard library's dataclasses functions, made on first use from a
    throwaway dataclass with the same fields (so those functions see their own Field objects)."""

    def __get__(self, obj, cls):
        made = cls.__dict__.get("__record_dataclass_fields__")
        if made is None:
            import dataclasses
            namespace = {"__annotations__": {}}
            for f in cls.__record_fields__:
                namespace["__annotations__"][f.name] = f.type
                given = {"default": f.default} if f.default is not MISSING else \
                    {"default_factory": f.default_factory} if f.default_factory is not MISSING else {}
                namespace[f.name] = dataclasses.field(**given, compare=f.compare, repr=f.repr)
            made = dataclasses.dataclass(type(cls.__name__, (), namespace)).__dataclass_fields__
            type.__setattr__(cls, "__record_dataclass_fields__", made)
        return made
