"""Typed stage configs loaded from YAML profiles, with command-line overrides.

Each stage owns one dataclass (``PretrainConfig``, ``RewardConfig``, ``PPOConfig``, ...) and
reads its own section of the profile::

    cfg = load_config(PPOConfig, "ppo", overrides=["init_kl_coef=0.1"])

A profile is one YAML file with one mapping per stage section. Unknown sections, unknown keys
and values of the wrong type fail at once with a :class:`ConfigError` that names the key and
what is allowed. Derived values belong in properties of the dataclass, never written back.
A key that was renamed is listed in the dataclass's ``RENAMED`` mapping (``{"old": "new"}``,
a ``ClassVar``), and the old name fails with a line that names the new one; a key that was
removed is listed in ``REMOVED`` (``{"old": "what to write instead"}``).

A command that runs several stages (the demo) reads the profile once and passes the mapping on,
and takes overrides for any section as ``section.key=value`` (:func:`split_overrides`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from common.errors import ConfigError
from common.paths import profile_path

T = TypeVar("T")

#: The sections a profile may hold, one per stage (plus ``data``, shared by all).
SECTIONS = ("data", "pretrain", "generate", "label", "reward", "ppo", "dpo", "kto", "compare", "tracking", "demo")


def read_profile(path: Path | str | None = None) -> dict[str, Any]:
    """Read and check the top level of a profile file (``RLHF_CONFIG`` when ``path`` is None)."""
    path = Path(path) if path is not None else profile_path()
    if not path.is_file():
        raise ConfigError(
            f"config profile {str(path)!r} does not exist.",
            "set RLHF_CONFIG (or --config) to a file such as configs/default.yaml or configs/smoke.yaml.",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config profile {str(path)!r} is not UTF-8 text.", "save it as UTF-8.") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)  # one line: the problem and where, not PyYAML's snippet
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"config profile {str(path)!r} is not valid YAML ({what}{where}).", "fix the syntax."
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config profile {str(path)!r} must be a mapping of sections.", f"use sections {list(SECTIONS)}."
        )
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"unknown section {key!r} in {str(path)!r}.", f"allowed sections: {', '.join(SECTIONS)}.")
    return raw


def load_config(
    cls: type[T],
    section: str,
    profile: Path | str | Mapping[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] | dict[str, Any] = (),
) -> T:
    """Build ``cls`` from ``section`` of the profile, then apply ``overrides``.

    ``profile`` is a file (``RLHF_CONFIG`` when None) or a profile already read by
    :func:`read_profile`. ``overrides`` are ``key=value`` strings (values parsed as YAML, dotted
    keys reach into nested dataclasses: ``gen_kwargs.max_new_tokens=24``) or a plain dict.
    """
    sections = profile if isinstance(profile, Mapping) else read_profile(profile)
    raw = sections.get(section) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"section {section!r} must be a mapping.", f"see the fields of {cls.__name__}.")
    merged = _deep_copy(raw)
    for key, value in _parse_overrides(overrides).items():
        _set_dotted(merged, key.split("."), value)
    cfg = from_dict(cls, merged, where=section)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build a dataclass from a mapping, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where or cls.__name__} must be a mapping, got {type(data).__name__}.", f"see {cls.__name__}."
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    renamed = getattr(cls, "RENAMED", {})
    removed = getattr(cls, "REMOVED", {})
    for key, value in data.items():
        if key not in fields and key in renamed:
            raise ConfigError(
                f"config key {_join(where, key)!r} was renamed to {_join(where, renamed[key])!r}.",
                f"write {renamed[key]}: {value!r} instead (--set {renamed[key]}=...).",
            )
        if key not in fields and key in removed:
            raise ConfigError(f"config key {_join(where, key)!r} was removed.", removed[key])
        if key not in fields:
            close = [n for n in fields if n.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown key {_join(where, key)!r}{hint}.",
                f"allowed keys in {where or cls.__name__}: {', '.join(sorted(fields))}.",
            )
        kwargs[key] = _coerce(hints[key], value, _join(where, key))
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or cls.__name__}: {err}.", f"see the fields of {cls.__name__}.") from None


def split_overrides(overrides: list[str] | tuple[str, ...], default: str) -> dict[str, list[str]]:
    """``section.key=value`` strings grouped by section (``ppo.lr=1e-4`` -> ``{"ppo": ["lr=1e-4"]}``);
    a key that does not start with a section name belongs to ``default``."""
    out: dict[str, list[str]] = {}
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        first, _, rest = key.partition(".")
        if first in SECTIONS and rest and "=" in item:
            out.setdefault(first, []).append(rest + "=" + item.split("=", 1)[1])
        else:
            out.setdefault(default, []).append(item)
    return out


def check_ranges(
    cfg: Any,
    section: str,
    *,
    positive: tuple[str, ...] = (),
    positive_or_null: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
    at_least_one: tuple[str, ...] = (),
    betas: tuple[str, ...] = (),
) -> None:
    """The value checks every stage shares, each failing with one :class:`ConfigError` naming the key:
    ``positive`` finite numbers > 0 (learning rates: NaN and inf are refused too), ``positive_or_null``
    the same or null (budgets such as ``max_minutes``: 0 or -1 never mean "unlimited"), ``non_negative``
    numbers >= 0 (seeds), ``at_least_one`` counts >= 1, and ``betas`` pairs in [0, 1) (Adam's betas)."""

    def finite(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    for name in positive + positive_or_null:
        value = getattr(cfg, name)
        if value is None and name in positive_or_null:
            continue
        if not (finite(value) and value > 0):
            hint = " or null (no limit)" if name in positive_or_null else ""
            raise ConfigError(
                f"{section}.{name}={value!r} must be a finite number > 0{hint}.",
                f"set {section}.{name} to e.g. 1e-4."
                if "lr" in name
                else f"set {section}.{name} to a positive number{hint}.",
            )
    for name in non_negative:
        value = getattr(cfg, name)
        if value is not None and not (finite(value) and value >= 0):
            raise ConfigError(f"{section}.{name}={value!r} must be >= 0.", f"set {section}.{name} to e.g. 0.")
    for name in at_least_one:
        value = getattr(cfg, name)
        if value is not None and not (finite(value) and value >= 1):
            raise ConfigError(f"{section}.{name}={value!r} must be >= 1.", f"set {section}.{name} to a positive count.")
    for name in betas:
        value = list(getattr(cfg, name))
        if len(value) != 2 or not all(finite(b) and 0 <= b < 1 for b in value):
            raise ConfigError(
                f"{section}.{name}={value!r} must be two numbers in [0, 1).", f"e.g. {section}.{name}=[0.9, 0.95]."
            )


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-ready dict of a config (paths as strings)."""

    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--config PROFILE`` and repeatable ``--set KEY=VALUE`` to a stage's CLI."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="profile file (default: $RLHF_CONFIG or configs/default.yaml)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set lr=1e-4 (repeatable; dotted keys for nested fields)",
    )


def describe(cls: type) -> str:
    """One line per field: name, type and default, for ``--help`` epilogs."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        )
        doc = f.metadata.get("help", "")
        lines.append(f"  {f.name} ({_type_name(hints[f.name])}, default {default!r}){': ' + doc if doc else ''}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- helpers


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _parse_overrides(overrides) -> dict[str, Any]:
    if isinstance(overrides, dict):
        return dict(overrides)
    out = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE.", "write it as --set key=value.")
        key, text = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = text
    return out


def _set_dotted(target: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        nxt = target.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            target[k] = nxt
        target = nxt
    target[keys[-1]] = value


def _deep_copy(d):
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def _type_name(tp) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp, value, key: str):
    """Check ``value`` against the annotation ``tp`` (with the few safe conversions YAML needs)."""
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(err)
        raise _type_error(key, tp, value)
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}={value!r} is not allowed.", f"allowed values: {', '.join(repr(a) for a in args)}.")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, where=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, tp, value)
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, tp, value)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, tp, value)
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _type_error(key, tp, value)
    return value


def _type_error(key: str, tp, value) -> ConfigError:
    return ConfigError(
        f"{key}={value!r} has the wrong type ({type(value).__name__}).",
        f"{key} takes {_type_name(tp)}.",
    )
