"""Typed run configuration: schema, YAML loading with ``_base_`` inheritance, overrides.

A run is described by one YAML file that may inherit from others and by dotted
command-line overrides. Loading resolves everything into a :class:`Config`
(pydantic v2, every section ``extra="forbid"``, strict types), remembering for
every key the file and line (or the override) that set it, so that an unknown
key, a wrong type or an impossible combination is reported as::

    invalid config (1 problem):
      train.stages.main.lr: expected a number, got 'fast' (str) (set in configs/a.yaml, line 12)

File semantics:

* ``_base_: path`` or ``_base_: [path, ...]`` at the top of a file names the
  files it inherits from, relative to the including file. Bases are merged left
  to right, then the file itself on top. Inheritance is recursive; a cycle is an
  error.
* Merging is deep for mappings; lists and scalars replace. A mapping that
  contains ``_delete_: true`` replaces the inherited mapping instead of merging
  into it.
* YAML anchors and merge keys (``<<: *defaults``) work inside one file, e.g. to
  share settings between training stages.
* Floats may be written ``5e-6`` (YAML 1.2 style) as well as ``5.0e-6``.

Overrides are ``dotted.key=value`` strings; the value is parsed as YAML
(``train.stages.main.milestones=[30,50]``, ``data.root=null``). A path element
that meets a list is a list index (``data.image_size.0=256``). An override
replaces whatever is at its path (mappings are not merged).

A method's own section is validated against its schema: the module
``vireid.config.methods.<name>`` (found by the method's name, without importing
torch or any method), or one registered with :func:`register_method_schema`.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import math
import os
import pkgutil
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model

from vireid.config.schema import (
    BASE_KEY,
    DELETE_KEY,
    Config,
    ConfigError,
    ConfigFieldError,
    ConfigIssue,
    MethodConfig,
    Path_,
    _lookup_source,
    _split_key,
)
from vireid.files import atomic_path

_METHOD_SCHEMAS: dict[str, type[BaseModel]] = {}
_CONFIG_CLASSES: dict[str, type[Config]] = {}
_METHOD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
SCHEMA_PACKAGE = "vireid.config.methods"
"""Package holding one schema module per built-in method, named as the method."""


def register_method_schema(name: str, schema: type[BaseModel], *, replace: bool = False) -> None:
    """Make ``method:`` sections with ``name: <name>`` validate against ``schema``.

    For methods that live outside vireid (built-in methods need no call: their
    schema is found in :data:`SCHEMA_PACKAGE` by name). ``schema`` must be a
    pydantic model with ``extra="forbid"`` and a ``name`` field (subclassing
    :class:`MethodConfig` gives both). Registering the same class twice is a
    no-op; a different class under a taken name needs ``replace=True``.
    """
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise TypeError(f"method schema for {name!r} must be a pydantic BaseModel subclass")
    if schema.model_config.get("extra") != "forbid":
        raise TypeError(
            f"method schema {schema.__name__} for {name!r} must set model_config extra='forbid' "
            "(subclass vireid.config.MethodConfig)"
        )
    if "name" not in schema.model_fields:
        raise TypeError(f"method schema {schema.__name__} for {name!r} must have a 'name' field")
    current = _METHOD_SCHEMAS.get(name)
    if current is schema:
        return
    if current is not None and not replace:
        raise ValueError(
            f"method {name!r} already has schema {current.__name__}; pass replace=True to change it"
        )
    _METHOD_SCHEMAS[name] = schema
    _CONFIG_CLASSES.pop(name, None)


def builtin_method_names() -> list[str]:
    """Names of the methods shipped with vireid: the modules of :data:`SCHEMA_PACKAGE`."""
    package = importlib.import_module(SCHEMA_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_"))


def get_method_schema(name: str) -> type[BaseModel] | None:
    """The schema of method ``name`` (registered, else the built-in module of that name), or None.

    A built-in schema module holds exactly one :class:`MethodConfig` subclass
    whose ``name`` default is the module's name.
    """
    if name in _METHOD_SCHEMAS:
        return _METHOD_SCHEMAS[name]
    if not _METHOD_NAME_RE.match(name) or name not in builtin_method_names():
        return None
    module = importlib.import_module(f"{SCHEMA_PACKAGE}.{name}")
    found = [v for v in vars(module).values() if isinstance(v, type)
             and issubclass(v, MethodConfig) and v.__module__ == module.__name__]
    if len(found) != 1 or found[0].model_fields["name"].default != name:
        raise TypeError(f"{module.__name__} must define one MethodConfig subclass with "
                        f"name defaulting to {name!r}, found {[c.__name__ for c in found]}")
    _METHOD_SCHEMAS[name] = found[0]
    return found[0]


def registered_method_schemas() -> dict[str, type[BaseModel]]:
    """Method name -> schema, for every built-in and registered method."""
    for name in builtin_method_names():
        get_method_schema(name)
    return dict(_METHOD_SCHEMAS)


def _config_class(method_name: Any) -> type[Config]:
    """Config class whose ``method`` field uses the schema of ``method_name``."""
    if not isinstance(method_name, str):
        return Config
    schema = get_method_schema(method_name)
    if schema is None:
        return Config
    cls = _CONFIG_CLASSES.get(method_name)
    if cls is None:
        cls = create_model(
            f"Config_{re.sub(r'[^0-9A-Za-z_]', '_', method_name)}",
            __base__=Config,
            method=(schema, Field(..., description=f"Options of method {method_name!r}.")),
        )
        _CONFIG_CLASSES[method_name] = cls
    return cls


# --------------------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """Safe loader that also reads ``5e-6`` / ``1e5`` as floats (YAML 1.2 style)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _display_path(path: Path) -> str:
    """The path relative to the working folder when it lies inside it, else absolute."""
    absolute = Path(os.path.normpath(path.absolute()))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _parse_yaml(text: str, origin: str) -> tuple[Any, dict[Path_, str]]:
    """Parse YAML text; also return ``path -> "origin, line N"`` for every mapping key and list item."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_duplicate_keys(node, (), origin)  # before merge keys are flattened
        data = loader.construct_document(node) if node is not None else None
        sources: dict[Path_, str] = {}
        if node is not None:
            _record_lines(loader, node, data, (), origin, sources)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML:\n{exc}") from None
    finally:
        loader.dispose()
    return data, sources


def _refuse_duplicate_keys(node: yaml.Node, path: Path_, origin: str) -> None:
    """A key written twice in one mapping is an error (YAML would keep the last silently);
    keys brought in by a ``<<`` merge may be overridden, as YAML intends."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key != "<<":
                if key in first_line:
                    dotted = ".".join(map(str, (*path, key)))
                    raise ConfigError(f"{origin}, line {line}: duplicate key {dotted!r} (first "
                                      f"set on line {first_line[key]})")
                first_line[key] = line
            _refuse_duplicate_keys(value_node, (*path, key), origin)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, (*path, index), origin)


def _record_lines(
    loader: _Loader, node: yaml.Node, value: Any, path: Path_, origin: str, out: dict[Path_, str]
) -> None:
    if isinstance(node, yaml.MappingNode) and isinstance(value, dict):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = loader.construct_object(key_node)
            if key not in value:
                continue
            child = (*path, key)
            out[child] = f"{origin}, line {key_node.start_mark.line + 1}"
            _record_lines(loader, value_node, value[key], child, origin, out)
    elif isinstance(node, yaml.SequenceNode) and isinstance(value, list):
        for index, (item_node, item) in enumerate(zip(node.value, value)):
            child = (*path, index)
            out[child] = f"{origin}, line {item_node.start_mark.line + 1}"
            _record_lines(loader, item_node, item, child, origin, out)


def _read_config_file(path: Path) -> tuple[dict[str, Any], dict[Path_, str]]:
    origin = _display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read config file ({exc.strerror or exc})") from None
    data, sources = _parse_yaml(text, origin)
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: a config file must be a mapping of keys, got {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{origin}: top-level key {key!r} must be a string")
    return data, sources


# --------------------------------------------------------------------------- merging


def _strip_delete(value: Any) -> Any:
    """Deep copy of ``value`` without ``_delete_`` markers."""
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    return copy.deepcopy(value)


def _has_prefix(path: Path_, prefix: Path_) -> bool:
    return path[: len(prefix)] == prefix


def _replace_sources(
    sources: dict[Path_, str], prefix: Path_, new_sources: Mapping[Path_, str]
) -> None:
    for key in [k for k in sources if _has_prefix(k, prefix)]:
        del sources[key]
    for key, where in new_sources.items():
        if _has_prefix(key, prefix):
            sources[key] = where


def _merge(
    base: dict[str, Any],
    base_sources: dict[Path_, str],
    child: Mapping[str, Any],
    child_sources: Mapping[Path_, str],
    path: Path_ = (),
) -> None:
    """Deep-merge ``child`` into ``base`` in place, keeping ``base_sources`` in step."""
    for key, value in child.items():
        if key == DELETE_KEY:
            continue
        here = (*path, key)
        current = base.get(key)
        merge_dicts = (
            isinstance(value, dict)
            and isinstance(current, dict)
            and value.get(DELETE_KEY) is not True
        )
        if merge_dicts:
            if here in child_sources:
                base_sources[here] = child_sources[here]
            _merge(current, base_sources, value, child_sources, here)
        else:
            base[key] = _strip_delete(value)
            _replace_sources(base_sources, here, child_sources)


def _load_tree(path: Path, stack: tuple[Path, ...]) -> tuple[dict[str, Any], dict[Path_, str]]:
    """Read ``path`` and its bases recursively; return merged data and key sources."""
    real = path.resolve()
    if real in stack:
        chain = " -> ".join(_display_path(p) for p in (*stack, real))
        raise ConfigError(f"{BASE_KEY} inheritance cycle: {chain}")
    data, sources = _read_config_file(path)
    origin = _display_path(path)
    bases = data.pop(BASE_KEY, None)
    sources = {k: v for k, v in sources.items() if k[:1] != (BASE_KEY,)}
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(
            f"{origin}: {BASE_KEY} must be a file path or a list of file paths, got {bases!r}"
        )
    merged: dict[str, Any] = {}
    merged_sources: dict[Path_, str] = {}
    for base in bases:
        base_path = Path(os.path.expanduser(base))
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        if not base_path.is_file():
            raise ConfigError(
                f"{origin}: base config {base!r} not found (looked for {_display_path(base_path)})"
            )
        base_data, base_sources = _load_tree(base_path, (*stack, real))
        _merge(merged, merged_sources, base_data, base_sources)
    _merge(merged, merged_sources, data, sources)
    return merged, merged_sources


# --------------------------------------------------------------------------- overrides



def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``a.b.c=value`` into the key path and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. train.stages.main.lr=5e-6)")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = _split_key(key)
    if not key or any(not part for part in parts):
        raise ConfigError(f"override {text!r}: malformed key {key!r}")
    if parts[0] == BASE_KEY or DELETE_KEY in parts:
        raise ConfigError(f"override {text!r}: {parts[0]!r} can only be used in config files")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return parts, value


def apply_overrides(
    data: dict[str, Any], sources: dict[Path_, str], overrides: Iterable[str]
) -> None:
    """Apply dotted overrides to ``data`` in place and record them in ``sources``."""
    for text in overrides:
        parts, value = parse_override(text)
        origin = f"override {text!r}"
        node: Any = data
        path: list[str | int] = []
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            step: str | int = part
            if isinstance(node, list):
                if not re.fullmatch(r"-?\d+", part):
                    raise ConfigError(
                        f"{origin}: {'.'.join(map(str, path))} is a list; expected an index, got {part!r}"
                    )
                step = int(part)
                if not -len(node) <= step < len(node):
                    raise ConfigError(
                        f"{origin}: index {step} out of range for "
                        f"{'.'.join(map(str, path))} (length {len(node)})"
                    )
                step = step % len(node)
            elif not isinstance(node, dict):
                raise ConfigError(
                    f"{origin}: {'.'.join(map(str, path))} is a {type(node).__name__}, "
                    f"it has no key {part!r}"
                )
            path.append(step)
            if last:
                node[step] = value
            else:
                if isinstance(node, dict) and (step not in node or node[step] is None):
                    node[step] = {}
                node = node[step]
        target = tuple(path)
        _replace_sources(sources, target, {})
        sources[target] = origin


# --------------------------------------------------------------------------- validation



def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional wrappers from a type annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of ``loc``."""
    current: Any = root
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
            continue
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if origin is dict and len(args) == 2:
            current = args[1]
        elif origin in (list, tuple) and args:
            current = args[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_error(error: Mapping[str, Any], root: type[BaseModel]) -> tuple[tuple, str]:
    """(location, readable message) for one pydantic error."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        owner = _model_at(root, loc)
        allowed = sorted(owner.model_fields) if owner is not None else []
        message = "unknown key"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        if allowed:
            message += f"; allowed keys here: {', '.join(allowed)}"
        return loc, message
    if kind == "missing":
        return loc, "required key is missing"
    if kind == "value_error" and isinstance(ctx.get("error"), ConfigFieldError):
        field_error = ctx["error"]
        return (*loc, field_error.field), str(field_error)
    if kind in _TYPE_WORDS:
        return (
            loc,
            f"expected {_TYPE_WORDS[kind]}, got {_short_repr(value)} ({type(value).__name__})",
        )
    if kind == "literal_error":
        return loc, f"expected one of {ctx.get('expected')}, got {_short_repr(value)}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif message.startswith("Input should be"):
        message = "expected" + message[len("Input should be") :] + f", got {_short_repr(value)}"
    return loc, message


def _get(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


def _non_finite(value: Any, path: Path_ = ()) -> list[Path_]:
    """Paths of the non-finite floats (inf, nan) in a plain config tree."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _non_finite(v, (*path, k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite(v, (*path, i))]
    return []


def _validate(data: Mapping[str, Any], sources: Mapping[Path_, str], default_source: str) -> Config:
    bad = _non_finite(data)
    if bad:  # no setting of a run is meaningful at inf or nan
        raise ConfigError.from_issues([
            ConfigIssue(".".join(map(str, path)), "must be a finite number, got "
                        f"{_short_repr(_get(data, path))}",
                        _lookup_source(sources, path, default_source)) for path in bad])
    method_section = data.get("method")
    method_name = method_section.get("name") if isinstance(method_section, Mapping) else None
    cls = _config_class(method_name)
    try:
        cfg = cls.model_validate(data)
    except ValidationError as exc:
        issues = []
        for error in exc.errors():
            loc, message = _describe_error(error, cls)
            if (
                error["type"] == "extra_forbidden"
                and loc[:1] == ("method",)
                and len(loc) == 2
                and cls is Config
                and isinstance(method_name, str)
            ):
                known = ", ".join(sorted(registered_method_schemas())) or "none"
                message += (
                    f" (method {method_name!r} has no registered schema, so only 'name' and "
                    f"'params' are accepted; methods with schemas: {known})"
                )
            where = _lookup_source(sources, loc, default_source)
            issues.append(ConfigIssue(".".join(map(str, loc)), message, where))
        raise ConfigError.from_issues(issues) from None
    cfg._sources = dict(sources)
    cfg._default_source = default_source
    return cfg


def _rebuild_config(data: dict[str, Any], sources: dict[Path_, str], default_source: str) -> Config:
    """Unpickling hook of :class:`Config`."""
    return _validate(data, sources, default_source)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>",
                     overrides: Iterable[str] = ()) -> Config:
    """Validate a plain dict (e.g. from a checkpoint) into a :class:`Config`, after
    dotted ``overrides``.

    ``source`` is named in error messages about stored keys; a key an override set is
    reported as set by that override. ``_base_`` is not allowed here.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(data).__name__}")
    if BASE_KEY in data:
        raise ConfigError(f"{source}: {BASE_KEY} is only allowed in config files")
    tree = _strip_delete(dict(data))
    sources: dict[Path_, str] = {}
    apply_overrides(tree, sources, list(overrides))
    return _validate(tree, sources, source)


def load_config(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config with its ``_base_`` chain, apply overrides and validate.

    If no file sets ``name``, the run is named after the file (its stem).
    Raises :class:`ConfigError` naming the key and the file or override for
    any unknown key, wrong type or violated constraint.
    """
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{_display_path(file)} is a folder; expected a config file "
                          "(e.g. configs/sysu/clipreid_vitb16.yaml)")
    if not file.is_file():
        raise ConfigError(f"config file not found: {_display_path(file)}")
    data, sources = _load_tree(file, ())
    apply_overrides(data, sources, list(overrides))
    if "name" not in data:
        data["name"] = file.stem
        sources[("name",)] = f"{_display_path(file)} (file name)"
    return _validate(data, sources, _display_path(file))


# --------------------------------------------------------------------------- dumping


def cfg_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (no ``_base_``); :func:`load_config` reads it back equal."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None, width=100)


def dump_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write :func:`cfg_to_yaml` to ``path`` atomically (temp file + rename); return the path."""
    target = Path(path)
    with atomic_path(target) as temporary:
        temporary.write_text(cfg_to_yaml(cfg), encoding="utf-8")
    return target
