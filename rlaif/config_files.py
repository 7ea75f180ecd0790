"""YAML config files: read with every key checked at every depth, and written beside outputs.

A typo in a key would otherwise be ignored silently and the run would use a default the researcher
did not mean; the error names the file, the key's full path and the keys known there.

A schema says what a mapping may hold: ``{key: sub-schema}``, where a sub-schema is
``None`` (any value), another schema (a nested mapping, checked the same way), or ``ANY_KEYS``
(a mapping whose keys are free, e.g. engine options passed through). ``{EACH: schema}`` is a
mapping of free names, each holding a mapping checked by ``schema`` (named rewards, variants).
A plain collection of names is the schema whose values are all free.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from rlaif.file_writes import atomic_write_bytes

#: A mapping whose keys are not checked (options passed through to another library).
ANY_KEYS = "any keys"
#: The key of a schema for a mapping of named entries, each checked by the schema it maps to.
EACH = "*"

Schema = Mapping[str, Any] | Collection[str]


class ConfigError(SystemExit):
    """A config file that does not fit its schema: a usage error, so a command or script exits with the
    message (naming the file and the key) and no traceback, as argparse does for a bad flag."""


def schema_of(dataclass_type: type, **nested: Any) -> dict[str, Any]:
    """The schema of a dataclass's fields (e.g. a TRL or rlaif training config), with ``nested`` added."""
    import dataclasses

    return {**{field.name: None for field in dataclasses.fields(dataclass_type)}, **nested}


def check_keys(config: Any, schema: Schema | None, where: str, source: str) -> None:
    """``ConfigError`` naming ``source`` and the dotted path of the first key the schema does not know."""
    if schema is None or schema == ANY_KEYS:
        if schema == ANY_KEYS and not isinstance(config, Mapping):
            raise ConfigError(f"{source}: {where or 'the file'} must be a mapping, got {type(config).__name__}")
        return
    if not isinstance(schema, Mapping):
        schema = dict.fromkeys(schema)
    if not isinstance(config, Mapping):
        raise ConfigError(f"{source}: {where or 'the file'} must be a mapping of settings, "
                          f"got {type(config).__name__}")
    for key, value in config.items():
        path = f"{where}.{key}" if where else str(key)
        if EACH in schema:
            check_keys(value, schema[EACH], path, source)
        elif key not in schema:
            close = difflib.get_close_matches(str(key), [str(k) for k in schema], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {path!r}{hint}; known{' in ' + where if where else ''}: "
                              f"{sorted(map(str, schema))}")
        else:
            check_keys(value, schema[key], path, source)


def read_config(path: str | Path, schema: Schema) -> dict:
    """The config at ``path``, its keys checked against ``schema`` at every depth."""
    try:
        with open(path, encoding="utf-8") as stream:
            config = yaml.safe_load(stream)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    check_keys(config, schema, "", str(path))
    return config


def write_config(path: str | Path, config: Mapping[str, Any], header: str = "") -> Path:
    """Write ``config`` as YAML (values made plain through JSON), with ``header`` as comment lines."""
    plain = json.loads(json.dumps(config, default=str))
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write_bytes(path, (comments + yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)).encode())
    return Path(path)
