"""Experiment configs: a YAML file with a fixed set of top-level keys, checked before any work.

A typo in a key would otherwise be ignored silently and the run would use a default the
researcher did not mean; the error names the file, the unknown keys and the known ones.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import yaml


def read_config(path: str | Path, known_keys: Collection[str]) -> dict:
    """The config at ``path``; ``SystemExit`` naming the file when it holds keys outside ``known_keys``."""
    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict):
        raise SystemExit(f"{path}: expected a mapping of settings, got {type(config).__name__}")
    unknown = set(config) - set(known_keys)
    if unknown:
        raise SystemExit(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known_keys)}")
    return config
