"""Name-to-class factories (one per family) shared by codecs, encoders and generators.

Recipes describe a component as ``{type: NAME, config: {...}}``. A registry maps
names to ``"module:Class"`` strings, imported on use so that an optional backend
costs nothing until it is chosen.
"""

import importlib
import inspect
from typing import Any, Dict, Mapping

from ..errors import ConfigError


def resolve(family: str, registry: Mapping[str, str], name: str) -> type:
    """The class registered under ``name``; a wrong name lists the valid ones."""
    if name not in registry:
        raise ConfigError(f"unknown {family} type {name!r}; valid choices: {', '.join(sorted(registry))}")
    module_name, class_name = registry[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def check_config_keys(cls: type, config: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError naming every key of ``config`` that ``cls.__init__`` does not take."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(config) - set(params) - {"self"})
    if unknown:
        valid = sorted(set(params) - {"self"})
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; valid keys: {', '.join(valid)}")


def build(family: str, registry: Mapping[str, str], spec: Mapping[str, Any]):
    """Instantiate ``{type: NAME, config: {...}}`` from ``registry``."""
    spec = dict(spec)
    unknown = set(spec) - {"type", "config"}
    if unknown or "type" not in spec:
        raise ConfigError(f"{family} spec must be {{type: ..., config: {{...}}}}, got keys {sorted(spec)}")
    cls = resolve(family, registry, spec["type"])
    config: Dict[str, Any] = dict(spec.get("config") or {})
    check_config_keys(cls, config, f"{family} {spec['type']!r}")
    try:
        return cls(**config)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{family} {spec['type']!r}: {err}") from err
