"""Load a :class:`~ssdkit.config.schema.Config` from a TOML file and apply overrides.

A preset file has the sections of :class:`Config` (``[model]``, ``[data]``, ``[augment]``,
``[solver]``, ``[runtime]``, ``[eval]``); any key left out keeps its default. Unknown sections or
keys and values of the wrong type are errors that name the file and the key.
"""
import dataclasses
import os
import tomllib
import typing

from ssdkit.config.schema import Config

PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")


def list_presets():
    """Names of the preset files shipped with ssdkit (without ``.toml``)."""
    return sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".toml"))


def preset_path(name):
    """Path of a shipped preset, e.g. ``preset_path("tiny_256_synthetic")``."""
    path = os.path.join(PRESET_DIR, name + ".toml")
    if not os.path.exists(path):
        raise FileNotFoundError("no preset named %r; available: %s" % (name, ", ".join(list_presets())))
    return path


def _coerce(value, annotation, key):
    """Check/convert a TOML value to the field type; raise ValueError naming ``key``."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError("config key '%s': expected a list, got %r" % (key, value))
        item_type = typing.get_args(annotation)[0]
        return tuple(_coerce(v, item_type, key) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ValueError("config key '%s': expected true/false, got %r" % (key, value))
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError("config key '%s': expected an integer, got %r" % (key, value))
        try:
            return int(value)
        except ValueError:
            raise ValueError("config key '%s': expected an integer, got %r" % (key, value)) from None
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("config key '%s': expected a number, got %r" % (key, value))
        try:
            return float(value)
        except ValueError:
            raise ValueError("config key '%s': expected a number, got %r" % (key, value)) from None
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError("config key '%s': expected a string, got %r" % (key, value))
        return value
    raise TypeError("unsupported config field type %r for %s" % (annotation, key))


def _build(sections, source):
    kwargs = {}
    hints = typing.get_type_hints(Config)
    for name, values in sections.items():
        if name not in hints:
            raise ValueError("%s: unknown config section [%s]; known: %s"
                             % (source, name, ", ".join(hints)))
        if not isinstance(values, dict):
            raise ValueError("%s: [%s] must be a table of key = value" % (source, name))
        section_cls = hints[name]
        field_types = typing.get_type_hints(section_cls)
        converted = {}
        for key, value in values.items():
            full = "%s.%s" % (name, key)
            if key not in field_types:
                raise ValueError("%s: unknown config key '%s'; known keys of [%s]: %s"
                                 % (source, full, name, ", ".join(field_types)))
            converted[key] = _coerce(value, field_types[key], full)
        try:
            kwargs[name] = section_cls(**converted)
        except ValueError as err:
            raise ValueError("%s: %s" % (source, err)) from None
    return Config(**kwargs)


def load_config(path=None):
    """Read a TOML config (``None``: all defaults).

    Parameters
    ----------
    path : str or None, a file path or a preset name (see :func:`list_presets`)
    """
    if path is None:
        return Config()
    if not os.path.exists(path) and not path.endswith(".toml"):
        path = preset_path(path)
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ValueError("%s: not valid TOML: %s" % (path, err)) from None
    return _build(data, path)


def apply_overrides(config, overrides, source="command line"):
    """Return a new Config with ``overrides`` applied.

    Parameters
    ----------
    config : Config
    overrides : dict ``{"section.key": value}``; values of ``None`` are ignored (flags not given)
    """
    sections = {f.name: dataclasses.asdict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    for full, value in overrides.items():
        if value is None:
            continue
        if "." not in full:
            raise ValueError("%s: override '%s' must be section.key" % (source, full))
        name, key = full.split(".", 1)
        if name not in sections:
            raise ValueError("%s: unknown config section '%s'" % (source, name))
        if key not in sections[name]:
            raise ValueError("%s: unknown config key '%s'" % (source, full))
        sections[name][key] = value
    return _build(sections, source)
