"""Config sections -> dataclasses, one rule for every section (AVS-Net and Monodepth2 models, scaling, train, data).

    cfg = dataclass_from_dict(AVSNetConfig, yaml_section, "config.yaml model")

Strict: a key the dataclass does not have is an error naming the section and the key and listing the known keys. Every
value is checked against the field's type annotation (float, int, bool, str, tuple[...], list[...], X | None) and
normalised: ints stand for floats, lists for tuples and tuples for lists, and a float written as text is parsed (YAML 1.1,
which PyYAML follows, reads 1e-3 without a dot as the string "1e-3"). Errors name the key: "n_bins: expected int, got '8'".
The dataclasses' own __post_init__ checks (ranges, choices) run afterwards; their errors get the section in front.

Every training config has the same shape: `model:`, `train:` and `data:` sections (read_sections), changed from the
command line by `section.key=value` assignments (apply_overrides, the one override parser).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SECTIONS = ("model", "train", "data")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """{field name: resolved annotation} of a dataclass (string annotations from `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def describe(annotation: Any) -> str:
    """int -> 'int'; tuple[int, int] | None -> 'tuple[int, int] | None' (as written in the dataclass)."""
    return annotation.__name__ if isinstance(annotation, type) and not typing.get_args(annotation) else str(annotation)


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` checked against `annotation` and normalised (see the module docstring); ValueError naming `key` if it does
    not fit."""
    try:
        return _coerce(value, annotation)
    except _MismatchError:
        raise ValueError(f"{key}: expected {describe(annotation)}, got {value!r} ({type(value).__name__})") from None


class _MismatchError(Exception):
    pass


def _coerce(value: Any, annotation: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if annotation is type(None) or annotation is None:
        if value is None:
            return None
        raise _MismatchError
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option)
            except _MismatchError:
                continue
        raise _MismatchError
    if origin is typing.Literal:
        if value in args:
            return value
        raise _MismatchError
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            raise _MismatchError
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _MismatchError
            items = [_coerce(v, a) for v, a in zip(value, args, strict=True)]
        else:
            items = [_coerce(v, args[0]) for v in value] if args else list(value)
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise _MismatchError
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _MismatchError
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _MismatchError
    if annotation is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _MismatchError from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _MismatchError
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise _MismatchError
    return value  # an annotation this module does not interpret


def check_fields(obj: Any) -> None:
    """Check and normalise every field of dataclass instance `obj` in place (call it first in __post_init__)."""
    for name, annotation in field_types(type(obj)).items():
        setattr(obj, name, coerce(getattr(obj, name), annotation, name))


def check_keys(cls: type, values: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """`values` as a dict, after checking it is a mapping holding only fields of dataclass `cls`."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} settings, got {type(values).__name__}")
    known = sorted(field_types(cls))
    unknown = sorted(set(values) - set(known), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {[f'{prefix}{k}' for k in unknown]}; known keys: {known}")
    return dict(values)


def dataclass_from_dict(cls: type, values: Any, where: str, prefix: str = "") -> Any:
    """Dataclass `cls` from a config section. `where` names the section in errors ("config.yaml model"); `prefix` is put
    before each key in them ("train." gives "train.lr")."""
    values = check_keys(cls, values, where, prefix)
    types_ = field_types(cls)
    out = {}
    for key, value in values.items():
        try:
            out[key] = coerce(value, types_[key], f"{prefix}{key}")
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    try:
        return cls(**out)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def section_from_dict(cls: type, values: Mapping[str, Any] | None, section: str) -> Any:
    """Dataclass `cls` from config section `section` (None = all defaults); errors name `section.key`."""
    return dataclass_from_dict(cls, values or {}, "config", prefix=f"{section}.")


def read_sections(raw: Any, source: str, flat: str | None = None) -> dict[str, dict[str, Any]]:
    """A config file's mapping -> {"model", "train", "data"} (missing sections empty). Unknown sections are errors; with
    `flat` (e.g. "model"), top-level keys that are not sections belong to that section (an older flat file form)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: expected a mapping with model:, train: and data: sections, got {type(raw).__name__}")
    loose = {k: v for k, v in raw.items() if k not in SECTIONS}
    if loose and flat is None:
        raise ValueError(f"{source}: unknown section(s) {sorted(loose, key=str)}; expected {', '.join(SECTIONS)}")
    if loose and raw.get(flat) is not None:
        raise ValueError(f"{source}: unknown section(s) {sorted(loose, key=str)}; expected {', '.join(SECTIONS)} (or, "
                         f"in the older flat form, {flat} keys at the top level and no {flat}: section)")
    out = {name: raw.get(name) or {} for name in SECTIONS}
    if loose:
        out[flat] = loose
    for name, values in out.items():
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: section {name}: must be a mapping, got {type(values).__name__}")
    return {name: dict(values) for name, values in out.items()}


def read_yaml_file(path: str | Path, what: str = "config") -> Any:
    """A YAML file's content; a file that is missing, unreadable or does not parse is an error naming it (and the line
    where parsing failed), never a traceback."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: {what} is not text ({err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}: {what} is not valid YAML{where} ({problem})") from None


def check_finite(obj: Any, section: str) -> None:
    """Every float field of dataclass instance `obj` is a finite number (NaN or inf in a config is a typo, not a value)."""
    for name, annotation in field_types(type(obj)).items():
        value = getattr(obj, name)
        if annotation is float and isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config: {section}.{name} must be a finite number, got {value}")


def apply_overrides(config: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (values parsed as YAML) to a nested config dict; returns a new dict."""
    import yaml

    out = json.loads(json.dumps(config))
    for text in assignments:
        if "=" not in text:
            raise ValueError(f"--set {text!r}: expected section.key=value, e.g. model.n_bins=32")
        path, raw = text.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"--set {text!r}: the key must name its section, e.g. train.lr or model.n_bins")
        node = out
        for part in parts[:-1]:
            if part not in node:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ValueError(f"--set {text!r}: {part} is a value, not a section")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(raw)
    return out
