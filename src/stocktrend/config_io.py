"""Strict loading of the project's typed configs from dicts and YAML files.

Every config is a pydantic dataclass with ``extra="forbid"``: an unknown key or a
value of the wrong type fails at load time with a message naming the file and the
key, never mid-run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

T = TypeVar("T")

STRICT = pydantic.ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(ValueError):
    """A config file or dict holds an unknown key or a bad value."""


def _format_errors(err: pydantic.ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "unexpected_keyword_argument" or e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        elif key == "<root>":  # a cross-field check: its message names the fields
            lines.append(f"{source}: {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "missing":
            lines.append(f"{source}: key '{key}' is required")
        else:
            got = repr(e.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."
            lines.append(f"{source}: key '{key}': {e['msg']} (got {got})")
    return "\n".join(lines)


def config_from_dict(cls: type[T], data: dict[str, Any], source: str = "<dict>") -> T:
    """Build ``cls`` from ``data``; raise ConfigError naming ``source`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return cls(**data)
    except pydantic.ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    except TypeError as err:  # e.g. unexpected keyword on a plain dataclass
        raise ConfigError(f"{source}: {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a config typo must not."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return data or {}


def load_yaml_config(cls: type[T], path: str | Path) -> T:
    return config_from_dict(cls, read_yaml(path), source=str(path))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, JSON-able dict of a (nested) config dataclass; tuples become lists."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dt.date):
            return v.isoformat()
        return v

    return plain(dataclasses.asdict(cfg))


def with_overrides(cfg: T, overrides: dict[str, Any], source: str = "<overrides>") -> T:
    """Copy ``cfg`` with fields replaced (re-validated); unknown fields are rejected."""
    merged = {**dataclasses.asdict(cfg), **overrides}
    return config_from_dict(type(cfg), merged, source)
