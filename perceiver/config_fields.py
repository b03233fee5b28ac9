"""Config dataclass fields as user options: their types, defaults, help text, and typed parsing of values.

Used by the CLI to generate ``--option`` flags and to check ``--set key=value`` and YAML values, and by
:mod:`perceiver.checkpoint` to type-check a ``config.json``. No torch import. Range checks of values are in
:mod:`perceiver.config_checks`.

Why not omegaconf or jsonargparse (evaluated on these configs with omegaconf 2.3): ``OmegaConf.structured`` +
``from_dotlist`` converts and checks the same values and suggests close keys, so it could replace
:func:`parse_value` (about 50 lines). It would not replace the rest: the adapter's and the data set's options are
typed by dataclasses chosen only after the task, adapter and data set are known (``training/plan.py`` merges in two
phases), resuming reports and refuses changes per option and layer (defaults < preset < --config < options <
--set), which omegaconf's merge does not track, and its errors are three lines (message, ``full_key``,
``object_type``) that would need rewording into the one line users get. jsonargparse would replace the Typer
command line, which the CLI is built on. Net: a new dependency to remove about 50 of some 700 lines.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import typing
from typing import Any, Dict, Union


class OptionError(ValueError):
    """A config key that does not exist or a value of the wrong type."""


@functools.lru_cache(maxsize=None)
def field_types(config_class: type) -> Dict[str, Any]:
    """Resolved type of each field of a dataclass (annotations may be strings)."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_class)}


@functools.lru_cache(maxsize=None)
def field_docs(config_class: type) -> Dict[str, str]:
    """Help text of each field: the string literal written right after it in the class body (if any)."""
    docs: Dict[str, str] = {}
    for cls in reversed(config_class.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(getattr(following, "value", None), ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def field_default(config_class: type, name: str) -> Any:
    for f in dataclasses.fields(config_class):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return None


def type_name(tp: Any) -> str:
    inner, optional = unwrap_optional(tp)
    args = [a for a in typing.get_args(inner) if a is not Ellipsis]
    if typing.get_origin(inner) in (list, tuple) and args:
        name = f"list of {type_name(args[0])}"
    else:
        name = getattr(inner, "__name__", None) or str(inner).replace("typing.", "")
    return f"{name} or none" if optional else name


def unwrap_optional(tp: Any):
    """``Optional[X]`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(key: str, text: Any, tp: Any) -> Any:
    """Convert ``text`` (a command-line string or a YAML value) to the field type ``tp``."""
    inner, optional = unwrap_optional(tp)
    if optional and (text is None or (isinstance(text, str) and text.lower() in ("none", "null", ""))):
        return None
    origin = typing.get_origin(inner) or inner
    try:
        if inner is bool:
            if isinstance(text, bool):
                return text
            if str(text).lower() in _TRUE:
                return True
            if str(text).lower() in _FALSE:
                return False
            raise ValueError
        if inner is int:
            if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
                raise ValueError
            return int(text)
        if inner is float:
            if isinstance(text, bool):
                raise ValueError
            return float(text)
        if inner is str:
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                raise ValueError
            return str(text)
        if origin in (dict, Dict):
            value = json.loads(text) if isinstance(text, str) else text
            if not isinstance(value, dict):
                raise ValueError
            return value
        if origin in (list, tuple):  # a JSON list on the command line; each item checked against the item type
            value = json.loads(text) if isinstance(text, str) else text
            if not isinstance(value, (list, tuple)):
                raise ValueError
            item_types = [a for a in typing.get_args(inner) if a is not Ellipsis] or [Any]
            if len(item_types) > 1 and len(item_types) != len(value):
                raise ValueError
            items = [parse_value(f"{key}[{i}]", item, item_types[min(i, len(item_types) - 1)])
                     for i, item in enumerate(value)]
            return tuple(items) if origin is tuple else items
    except (TypeError, ValueError, json.JSONDecodeError):
        raise OptionError(f"invalid value {text!r} for {key}: expected {type_name(tp)}") from None
    return text
