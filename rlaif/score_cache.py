"""A disk cache in front of any backend: each prompt is scored once per (engine settings, labels).

Keyed by SHA-256 of (backend fingerprint, rendered prompt, candidate labels), so a
changed model, dtype, template or label set misses, and everything else hits.
SQLite in WAL mode: each batch of results is one committed transaction, readers
never see half a batch, and a killed process loses at most the batch in flight.
Only finite log-probs are stored; a failure is never cached, so it is retried.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlaif.backends.base import LabelBackend


class CachedBackend:
    """Wraps a LabelBackend; ``hits`` and ``misses`` count prompts answered from disk or scored."""

    def __init__(self, backend: LabelBackend, path: str | Path):
        self.backend, self.path = backend, Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, logprobs TEXT NOT NULL)")
        self._db.commit()
        self._fingerprint = json.dumps(backend.fingerprint(), sort_keys=True, default=str)
        self.hits = self.misses = 0

    def _key(self, prompt: str, labels: Sequence[str]) -> str:
        payload = json.dumps([self._fingerprint, prompt, list(labels)], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        keys = [self._key(prompt, labels) for prompt in prompts]
        found: dict[str, list[float]] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start:start + 500]
            rows = self._db.execute(f"SELECT key, logprobs FROM scores WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk).fetchall()
            found.update((key, json.loads(value)) for key, value in rows)
        missing = [i for i, key in enumerate(keys) if key not in found]
        result = np.empty((len(prompts), len(labels)), dtype=np.float64)
        if missing:
            scored = self.backend.label_logprobs([prompts[i] for i in missing], labels)
            result[missing] = scored
            finite = [(keys[i], json.dumps([float(x) for x in row]))
                      for i, row in zip(missing, scored) if np.all(np.isfinite(row))]
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO scores (key, logprobs) VALUES (?, ?)", finite)
        for i, key in enumerate(keys):
            if key in found:
                result[i] = found[key]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return result

    def chat_prompt(self, message: str, reply_prefix: str) -> str:
        return self.backend.chat_prompt(message, reply_prefix)

    @property
    def max_prompt_tokens(self) -> int | None:
        return getattr(self.backend, "max_prompt_tokens", None)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.backend.count_tokens(texts)

    def fingerprint(self) -> dict[str, Any]:
        return self.backend.fingerprint()

    def close(self) -> None:
        self._db.close()
