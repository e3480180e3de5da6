"""Typed options: the base of every options type, and its errors in plain words.

An options type is a frozen pydantic model, each field with its default and
constraint (``Field(2, ge=1)``); values are strict (an int passes for a float,
nothing else converts). `parse` raises ``ValueError("lr = -1.0 must be a number
> 0")``; a field's ``description``, where given, says what it must be.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import ClassVar

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, ValidationError


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    #: The fields always in the run id (None: all). Any other field enters it only when set
    #: away from its default, so adding an option keeps the ids of the runs already stored.
    ID_ALWAYS: ClassVar[tuple[str, ...] | None] = None

    def as_dict(self, *, given: bool = False, drop_none: bool = False) -> dict:
        """The options as plain values: every field (``given``: only those given; ``drop_none``:
        without the fields that are None). The one place options become a dict: a run's id and
        its row's ``config`` (`spec.RunSpec`); everything else reads the typed fields."""
        return self.model_dump(exclude_unset=given, exclude_none=drop_none)

    def id_part(self) -> dict:
        """The fields that name the run (`ID_ALWAYS`, the others where away from their default),
        None-valued ones left out."""
        values = self.as_dict(drop_none=True)
        if self.ID_ALWAYS is None:
            return values
        return {k: v for k, v in values.items()
                if k in self.ID_ALWAYS or v != type(self).model_fields[k].default}


def check_keys(given: dict, allowed, what: str = "unknown key(s)") -> None:
    """Raise ``ValueError`` naming the keys of ``given`` not in ``allowed``."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        hints = "".join(did_you_mean(k, allowed) for k in unknown[:1])
        raise ValueError(f"{what} {', '.join(map(shown, unknown))}{hints}; allowed: {', '.join(sorted(allowed))}")


def did_you_mean(name, choices) -> str:
    """`` (did you mean 'x'?)`` naming the choice closest to a misspelt ``name``
    (`difflib.get_close_matches`), or "" when none is close."""
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [c for c in choices if isinstance(c, str)], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def shown(key) -> str:
    """A key as a message shows it: as written, or quoted where it is empty or holds a control
    character (a message stays one line)."""
    return key if isinstance(key, str) and key.isprintable() and key.strip() else repr(key)


def parse(kind: type[Options], given: dict) -> Options:
    """``kind(**given)``, or a ``ValueError`` naming the first bad key."""
    check_keys(given, kind.model_fields)
    try:
        return kind(**given)
    except ValidationError as err:
        e = err.errors()[0]
        key = e["loc"][0] if e["loc"] else None
        if e["type"] == "missing":
            raise ValueError(f"missing required key {key!r}") from None
        if key is None:
            raise ValueError(str(e["ctx"]["error"])) from None
        field = kind.model_fields[key]
        must = field.description or (str(e["ctx"]["error"]) if e["type"] == "value_error"
                                     else describe(field.annotation, field.metadata))
        raise ValueError(f"{key} = {given[key]!r} must be {must}") from None


def describe(annotation, metadata=()) -> str:
    """What a value of this type and these bounds must be, in words."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return describe(args[0], metadata)
    if annotation is bool:
        return "true or false"
    what = {int: "an integer", float: "a number", str: "a string"}.get(annotation, str(annotation))
    bound = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower())
             for m in metadata if isinstance(m, (Gt, Ge, Lt, Le))}
    low, high = bound.get("ge", bound.get("gt")), bound.get("le", bound.get("lt"))
    if low is not None and high is not None:
        return f"{what} in {'[' if 'ge' in bound else '('}{low}, {high}{']' if 'le' in bound else ')'}"
    for name, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
        if name in bound:
            return f"{what} {sign} {bound[name]}"
    return what
