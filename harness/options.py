"""Options declared once: a config dataclass's fields carry their help, flag and choices, and the
command line, TOML loading, type checking and the help texts' defaults are all derived from them.

    @dataclass
    class ReplayConfig:
        timeout_s: float = option(60.0, "per-schema time limit, s", flag="--timeout")

gives `--timeout` (type float, "per-schema time limit, s (default 60.0)"), the TOML key
`timeout_s`, and the check that a TOML or flag value is a number. A new knob touches one line.
Flags default to None in argparse, so that only the flags a user gave override the TOML file, and
the TOML file only the defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from .errors import ConfigError

_MISSING = dataclasses.MISSING


def option(default: Any, help: str, *, flag: str | None = None, short: str | None = None,
           choices: tuple[str, ...] | None = None, metavar: str | None = None, cli: bool = True,
           repeat: bool = False) -> Any:
    """A config field: its default, its help and how it appears on the command line (cli=False:
    TOML and code only; repeat: a list flag given once per item). A list default is copied for
    each instance."""
    meta = {"help": help, "flag": flag, "short": short, "choices": choices, "metavar": metavar, "cli": cli,
            "repeat": repeat}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def executor_option(local: str) -> Any:
    """--executor, the same for every command that can spread its work over Ray."""
    return option("local", f"local: {local}; ray: Ray actors (pip install ray), -j of them, on a local Ray or the "
                  "cluster at --address (docs/cluster.md)", choices=("local", "ray"))


def address_option() -> Any:
    return option(None, "--executor ray: the Ray cluster to join (its head's host:port, or auto); default: start a "
                  "local Ray with -j CPUs")


def _args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)


def _base(hint: Any) -> Any:
    """The annotation without None: int | None -> int, list[str] -> list[str]."""
    args = [a for a in _args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else hint


def type_ok(hint: Any, value: Any) -> bool:
    """value matches the annotation (str, int, float, bool, list[...], dict, X | None); an int is a
    float, a bool is neither."""
    if len(_args(hint)) > 1:
        return any(type_ok(a, value) for a in _args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(type_ok(typing.get_args(hint)[0], v) for v in value)
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _hint_text(hint: Any) -> str:
    return " or ".join("None" if a is type(None) else str(a).replace("typing.", "").replace("<class '", "")
                       .replace("'>", "") for a in _args(hint))


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not _MISSING else f.default


def _default_text(f: dataclasses.Field) -> str:
    d = _default(f)
    if d is None or d == [] or d == {}:
        return ""
    if isinstance(d, bool):
        return " (default: on)" if d else " (default: off)"
    return f" (default: {','.join(map(str, d)) if isinstance(d, list) else d})"


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Every cli field of the config class as a flag; the help ends with the declared default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        m = f.metadata
        if not m.get("cli", False):
            continue
        names = [m["flag"] or "--" + f.name.replace("_", "-")] + ([m["short"]] if m["short"] else [])
        base, help_text = _base(hints[f.name]), m["help"] + _default_text(f)
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if base is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
            continue
        if base in (int, float):
            kw["type"] = base
        if typing.get_origin(base) is dict:
            kw.update(action="append", metavar=m["metavar"] or "KEY=VALUE")
        if m.get("repeat"):
            kw["action"] = "append"
        if m["choices"]:
            kw["choices"] = m["choices"]
        if m["metavar"] and "metavar" not in kw:
            kw["metavar"] = m["metavar"]
        parser.add_argument(*names, **kw)


def _key_values(name: str, items: list[str], where: str) -> dict[str, Any]:
    """k=v strings -> a dict; values parsed as TOML scalars (1, 0.5, true, "x"), else kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: --{name.replace('_', '-')} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def coerce(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Comma-separated strings into lists, k=v lists into dicts, then every value type-checked
    against the field's annotation: a ConfigError naming `where` and the key otherwise."""
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        base = _base(hints[name])
        if typing.get_origin(base) is list and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
            if typing.get_args(base)[0] is int:
                try:
                    value = [int(v) for v in value]
                except ValueError as exc:
                    raise ConfigError(f"{where}: '{name}' must be integers, got {value!r:.60}") from exc
        elif typing.get_origin(base) is dict and isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: '{name}' must be a table or KEY=VALUE strings, got {value!r:.60}")
            value = _key_values(name, value, where)
        if not type_ok(hints[name], value):
            raise ConfigError(f"{where}: '{name}' must be {_hint_text(hints[name])}, got {value!r:.60}")
        out[name] = value
    return out


def load_toml(path: str | Path, cls: type, table: str) -> dict[str, Any]:
    """A TOML file's values for this config: its [table] (or top-level keys), names and types checked."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from exc
    values = raw.get(table, raw)
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: [{table}] must be a table, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown config key(s): {', '.join(unknown)} (not settings of [{table}])")
    return coerce(cls, values, str(path))


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags a user gave (not None), for the config class's fields."""
    known = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in known and v is not None}
