"""Methods: one file each, registered by name.

Importing this package registers every method's config schema, so that
``method: {name: ...}`` sections are validated against it.
"""

from __future__ import annotations

from vireid.config import Config
from vireid.data.types import ReIDData
from vireid.methods.base import Method, ParamGroup, Stage
from vireid.methods.clipreid import ClipReID
from vireid.methods.csdn import CSDN
from vireid.methods.lsmrl import LSMRL
from vireid.methods.xreid import XReID

METHODS: dict[str, type[Method]] = {
    "clipreid": ClipReID, "csdn": CSDN, "lsmrl": LSMRL, "xreid": XReID,
}


def list_methods() -> list[str]:
    return sorted(METHODS)


def build_method(cfg: Config, data: ReIDData, rank: int = 0, world_size: int = 1) -> Method:
    """The method named by ``cfg.method.name``, built for ``data``."""
    name = cfg.method.name
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (method.name); available: {list_methods()}")
    return METHODS[name](cfg, data, rank=rank, world_size=world_size)


__all__ = ["METHODS", "Method", "ParamGroup", "Stage", "build_method", "list_methods"]
