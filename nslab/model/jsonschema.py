"""The topology file's JSON Schema (draft 2020-12), made from spec.py: what `nslab schema` prints, for editors
(yaml-language-server) and other tools. The loader stays the judge: it also checks what a schema can't
(addresses used twice, routes that can't be reached, real servers that share no switch with the director)."""

from . import spec

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID = "urn:nslab:topology"


def schema() -> dict:
    """The whole schema: the topology object at the root, every other object under $defs."""
    out = {"$schema": DIALECT, "$id": ID, "title": "nslab topology"}
    out.update(_object(spec.TOPOLOGY))
    out["$defs"] = {name: _object(obj) for name, obj in spec.OBJECTS.items() if obj is not spec.TOPOLOGY}
    return out


def _object(obj: spec.Obj) -> dict:
    out = {"type": "object", "description": obj.doc,
           "properties": {key.name: _key(key) for key in obj.keys}, "additionalProperties": False}
    if obj.required:
        out["required"] = list(obj.required)
    if obj.any_of:
        out["anyOf"] = [{"required": [k]} for k in obj.any_of]
    if obj.not_both:
        out["not"] = {"required": list(obj.not_both)}
    return out


def _key(key: spec.Key) -> dict:
    out = type_schema(key.type)
    if key.nullable:
        out = {"anyOf": [out, {"type": "null"}]}
    out["description"] = key.doc
    if key.default is not None:
        out["default"] = key.default
    return out


def type_schema(t) -> dict:
    """The schema of one spec type."""
    if isinstance(t, spec.Text):
        out = {"type": "string"}
        for attr, word in (("pattern", "pattern"), ("max_length", "maxLength"), ("min_length", "minLength")):
            if getattr(t, attr) is not None:
                out[word] = getattr(t, attr)
        if t.enum is not None:
            out["enum"] = list(t.enum)
        if t.forbid:
            out["not"] = {"enum": list(t.forbid)}
    elif isinstance(t, spec.Int):
        out = {"type": "integer"}
        if t.lo is not None:
            out["minimum"] = t.lo
        if t.hi is not None:
            out["maximum"] = t.hi
    elif isinstance(t, spec.Bool):
        out = {"type": "boolean"}
    elif isinstance(t, spec.List):
        out = {"type": "array", "items": type_schema(t.item)}
        if t.unique:
            out["uniqueItems"] = True
        if t.min_items is not None:
            out["minItems"] = t.min_items
    elif isinstance(t, spec.Map):
        # patternProperties, so that an editor offers the value's keys under any well-formed name;
        # propertyNames for what a pattern can't say (the length, the reserved names).
        value = type_schema(t.value)
        out = {"type": "object", "patternProperties": {t.key.pattern or ".*": value}, "additionalProperties": False}
        names = {k: v for k, v in type_schema(t.key).items() if k in ("maxLength", "minLength", "not")}
        if t.names is not None:
            names.update(type_schema(t.names))
        if names:
            out["propertyNames"] = names
        if t.min_items is not None:
            out["minProperties"] = t.min_items
    elif isinstance(t, spec.Ref):
        out = {"$ref": f"#/$defs/{t.obj}"}
        if t.nullable:
            out = {"anyOf": [out, {"type": "null"}]}
    elif isinstance(t, spec.Either):
        out = {"oneOf": [type_schema(form) for form in t.forms]}
    else:
        raise TypeError(f"not a spec type: {t!r}")
    if getattr(t, "doc", ""):
        out["description"] = t.doc
    return out
