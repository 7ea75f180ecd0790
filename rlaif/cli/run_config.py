"""``--config run.yaml``: a command's flags as YAML keys, and the resolved run written beside its output.

Every long flag is a key, spelled as on the command line (``max-prompt-tokens``; ``max_prompt_tokens``
is accepted too). The file's values become the parser's defaults, so flags given on the command line
win. Lists are accepted where a flag takes a comma-separated list (``preamble: [base, detailed]``,
``clamp: [0.4, 0.6]``) and mappings where it takes ``key=value`` pairs (``columns``, ``label-map``,
``vllm-option``). ``OUT.config.yaml`` holds every flag's resolved value and, under ``provenance``, the
package version and the model's fingerprint: ``rlaif label --config OUT.config.yaml`` runs it again.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import Any

from rlaif.config_files import ANY_KEYS, ConfigError, check_keys, read_config, write_config

#: Destinations that are not settings of the run.
NOT_SETTINGS = {"help", "config", "func", "dry_run"}
#: Flags that take key=value pairs, with the keys each accepts (ANY_KEYS: passed through).
MAPPING_FLAGS = {"columns": ("id", "context", "response_1", "response_2", "label", "chosen", "rejected", "task"),
                 "label-map": ANY_KEYS, "vllm-option": ANY_KEYS}
#: Flags that take a comma-separated list.
LIST_FLAGS = {"preamble", "clamp"}


def config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv``, read before the full parse (the file supplies required flags)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    return pre.parse_known_args(argv)[0].config


def takes_config(parser: argparse.ArgumentParser) -> bool:
    return any("--config" in action.option_strings for action in parser._actions)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Key -> action for each long flag of ``parser`` that is a setting."""
    found = {}
    for action in parser._actions:  # argparse offers no public list of a parser's options
        for flag in action.option_strings:
            if flag.startswith("--") and action.dest not in NOT_SETTINGS:
                found[flag[2:]] = action
    return found


def _switch(action: argparse.Action) -> bool:
    return action.nargs == 0 and isinstance(action.const, bool)


def _value(key: str, value: Any, action: argparse.Action, source: str) -> Any:
    """The YAML value as argparse holds the flag's value after parsing."""
    where = f"{source}: {key}"
    if _switch(action):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} is a switch: true or false, got {value!r}")
        return value if action.const else not value
    if isinstance(value, dict):
        if key not in MAPPING_FLAGS:
            raise ConfigError(f"{where} takes one value, got a mapping")
        items = [f"{k}={'true' if v is True else 'false' if v is False else v}" for k, v in value.items()]
        return items if isinstance(action.default, list) else ",".join(items)
    if isinstance(value, list):
        if isinstance(action.default, list):
            return [str(v) for v in value]
        if key not in LIST_FLAGS:
            raise ConfigError(f"{where} takes one value, got a list")
        return ",".join(str(v) for v in value)
    if value is None:
        return None
    if action.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (action.type is int
                                                                              and not isinstance(value, int)):
            raise ConfigError(f"{where} must be {'an integer' if action.type is int else 'a number'}, "
                              f"got {value!r}")
        value = action.type(value)
    elif isinstance(value, (int, float, bool)):
        value = str(value)
    if isinstance(action.default, list):
        return [value]
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where} must be one of {list(action.choices)}, got {value!r}")
    return value


def apply_config(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """Make the settings in ``path`` the defaults of ``parser`` (command-line flags still win); returns them."""
    known = options(parser)
    config = read_config(path, ANY_KEYS) or {}
    defaults: dict[str, Any] = {}
    for raw_key, value in config.items():
        key = str(raw_key).replace("_", "-")  # max_prompt_tokens is max-prompt-tokens
        if key == "provenance":
            continue
        if key not in known:  # named as written, with the flags' spelling as the known keys
            check_keys({raw_key: value}, {k: None for k in known} | {"provenance": None}, "", path)
        if isinstance(value, dict):
            check_keys(value, MAPPING_FLAGS.get(key), str(raw_key), path)
        action = known[key]
        if action.dest in defaults:
            raise ConfigError(f"{path}: {raw_key} sets {action.dest!r} a second time")
        defaults[action.dest] = _value(key, value, action, path)
        action.required = False
    written_by = (config.get("provenance") or {}).get("rlaif_version")
    from rlaif import __version__

    if written_by and written_by != __version__:
        print(f"note: {path} was written by rlaif {written_by}; this is {__version__}", file=sys.stderr)
    parser.set_defaults(**defaults)
    return defaults


def resolved_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Every setting's value after parsing, keyed by its flag (a switch pair by its positive flag)."""
    settings: dict[str, Any] = {}
    for key, action in options(parser).items():
        if action.dest in {option.dest for option in settings.values()}:
            continue
        if _switch(action) and action.const is False and any(
                other.dest == action.dest and other.const is True for other in options(parser).values()):
            continue
        settings[key] = action
    return {key: (getattr(args, action.dest) if not _switch(action) or action.const
                  else not getattr(args, action.dest)) for key, action in settings.items()}


def write_run_config(out: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
                     fingerprint: dict[str, Any]) -> Path:
    """``OUT.config.yaml``: the resolved settings and their provenance, loadable by ``--config``."""
    from rlaif import __version__

    path = Path(f"{out}.config.yaml")
    provenance = {"rlaif_version": __version__, "command": parser.prog, "model_fingerprint": fingerprint,
                  "working_directory": os.getcwd(), "written": datetime.datetime.now().isoformat(timespec="seconds")}
    return write_config(path, {**resolved_settings(parser, args), "provenance": provenance},
                        header=f"The resolved settings of the run that wrote {out}.\n"
                               f"Run it again (paths are relative to provenance.working_directory): "
                               f"{parser.prog} --config {path}")
