"""A disk cache in front of any backend: each prompt is scored once per (engine settings, labels).

Keyed by SHA-256 of (backend fingerprint, rendered prompt, candidate labels), so a
changed model, dtype, template or label set misses, and everything else hits.
SQLite in WAL mode: each batch of results is one committed transaction, readers
never see half a batch, and a killed process loses at most the batch in flight.
Only finite log-probs are stored; a failure is never cached, so it is retried.
Generations (rationales) are cached too, keyed by their settings and seed.
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
from rlaif.backends.label_tokens import Continuation


class CachedBackend:
    """Wraps a LabelBackend; ``hits`` and ``misses`` count prompts answered from disk or scored.

    Itself a complete LabelBackend: what is not cached (tokens, limits, chat wrapping) is the
    wrapped engine's, member by member; anything else of the engine's is at ``.backend``.
    """

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

    def _lookup(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start:start + 500]
            rows = self._db.execute(f"SELECT key, logprobs FROM scores WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk).fetchall()
            found.update((key, json.loads(value)) for key, value in rows)
        return found

    def _store(self, items: Sequence[tuple[str, Any]]) -> None:
        with self._db:  # one transaction: all of a batch, or none of it
            self._db.executemany("INSERT OR REPLACE INTO scores (key, logprobs) VALUES (?, ?)",
                                 [(key, json.dumps(value)) for key, value in items])

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        keys = [self._key(prompt, labels) for prompt in prompts]
        found = self._lookup(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        result = np.empty((len(prompts), len(labels)), dtype=np.float64)
        if missing:
            scored = self.backend.label_logprobs([prompts[i] for i in missing], labels)
            result[missing] = scored
            self._store([(keys[i], [float(x) for x in row]) for i, row in zip(missing, scored)
                         if np.all(np.isfinite(row))])
        for i, key in enumerate(keys):
            if key in found:
                result[i] = found[key]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return result

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 n: int = 1, seed: int = 0, stop: Sequence[str] = ()) -> list[list[str]]:
        """Generations, cached like scores (sampled ones too: the seed is part of the key)."""
        settings = json.dumps({"generate": [max_new_tokens, temperature, n, seed, list(stop)]})
        keys = [self._key(prompt, [settings]) for prompt in prompts]
        found = self._lookup(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        if missing:
            made = self.backend.generate([prompts[i] for i in missing], max_new_tokens=max_new_tokens,
                                         temperature=temperature, n=n, seed=seed, stop=stop)
            self._store([(keys[i], texts) for i, texts in zip(missing, made)])
            found.update((keys[i], texts) for i, texts in zip(missing, made))
        return [found[key] for key in keys]

    def chat_prompt(self, message: str, reply_prefix: str) -> str:
        return self.backend.chat_prompt(message, reply_prefix)

    @property
    def max_prompt_tokens(self) -> int | None:
        return self.backend.max_prompt_tokens

    @property
    def pairs_per_step(self) -> int:
        return self.backend.pairs_per_step

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.backend.count_tokens(texts)

    def continuations(self, prompt: str, labels: Sequence[str]) -> list[Continuation]:
        return self.backend.continuations(prompt, labels)

    def fingerprint(self) -> dict[str, Any]:
        return self.backend.fingerprint()

    def close(self) -> None:
        self._db.close()
