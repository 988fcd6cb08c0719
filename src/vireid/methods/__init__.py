"""Methods: one file each, registered with :func:`register_method`.

A method ``foo`` is two files and its configs: ``vireid/methods/foo.py`` (a
:class:`Method` subclass decorated with ``@register_method``, whose ``Options``
is its schema) and ``vireid/config/methods/foo.py`` (that schema, torch-free so
that configs load instantly). Its name is written once, in the schema's ``name``
field; nothing else lists methods (docs/adding_a_method.md).
"""

from __future__ import annotations

import importlib

from vireid.config import Config, builtin_method_names, get_method_schema
from vireid.data.types import DataSpec, ReIDData
from vireid.methods.base import Method, ParamGroup, Stage

METHODS: dict[str, type[Method]] = {}
"""Method classes registered so far (built-in ones are imported on first use)."""


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register ``cls`` under the name of its ``Options`` schema."""
    schema = getattr(cls, "Options", None)
    field = getattr(schema, "model_fields", {}).get("name")
    if field is None or not isinstance(field.default, str):
        raise TypeError(f"{cls.__name__}.Options must be a MethodConfig subclass with a name")
    name = field.default
    if get_method_schema(name) is not schema:
        raise TypeError(f"{cls.__name__}.Options is not the schema of method {name!r} "
                        "(vireid.config.methods.<name>, or register_method_schema)")
    if METHODS.get(name, cls) is not cls:
        raise ValueError(f"method {name!r} is already registered by {METHODS[name].__name__}")
    cls.name = name
    METHODS[name] = cls
    return cls


def list_methods() -> list[str]:
    """Names of every method: the built-in ones and any registered since."""
    return sorted(set(builtin_method_names()) | set(METHODS))


def get_method(name: str) -> type[Method]:
    """The class of method ``name`` (a built-in method's module is imported here)."""
    if name not in METHODS and name in builtin_method_names():
        importlib.import_module(f"{__name__}.{name}")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (method.name); available: {list_methods()}")
    return METHODS[name]


def build_method(cfg: Config, data: ReIDData | DataSpec, rank: int = 0,
                 world_size: int = 1) -> Method:
    """The method named by ``cfg.method.name``: for training on ``data`` (a loaded
    dataset), or for inference from a :class:`DataSpec` alone (no training stages)."""
    cls = get_method(cfg.method.name)
    spec = data if isinstance(data, DataSpec) else DataSpec.of(data)
    method = cls(cfg, spec, rank=rank, world_size=world_size)
    if isinstance(data, ReIDData):
        method.attach_data(data)
    return method


__all__ = ["METHODS", "DataSpec", "Method", "ParamGroup", "Stage", "build_method", "get_method",
           "list_methods", "register_method"]
