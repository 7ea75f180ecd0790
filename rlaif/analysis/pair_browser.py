"""The pair browser: every labeled pair with its texts on one static HTML page.

The report says how often the labeler agrees with people; this page shows the pairs behind
the number, so a reader can see *why* (position bias, a truncated context, a prompt the
model does not answer). The labels table holds no texts, so the pairs are joined back by id
and checked against each row's ``pair_hash`` (``rlaif.export.pairs_for_rows``).

Which rows are disagreements and which chose by position is decided here, in Python, with the
definitions the report uses (``labels_table.scored``, ``biases.same_position``); the page only
filters, sorts, searches and pages. The data is embedded once as JSON and rendered by the page's
own script with ``textContent`` (no server, no network, no HTML built from data), one page of
rows at a time, so a file of 10,000 pairs opens quickly. The view (filters, sort, search, page)
lives in the URL's hash, e.g. ``pairs.html#filter=disagree,flip&sort=-confidence``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlaif.analysis.biases import same_position
from rlaif.export import pairs_for_rows
from rlaif.file_writes import atomic_write_bytes
from rlaif.labels_table import ai_choices, numeric, scored
from rlaif.pairs import PreferencePair

#: The page: HTML, CSS and script, shipped beside this module; the data replaces ``DATA_SLOT``.
TEMPLATE = "pair_browser.html"
DATA_SLOT = "/*PAIR_DATA*/"
#: Flags a row may carry (``labels_table.COLUMNS["flags"]``); each is a filter on the page.
FLAGS = ("low_candidate_mass", "context_truncated", "skipped", "nonfinite_logprobs")


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _choice(value: float) -> int | None:
    return int(value) if value in (0.0, 1.0, 2.0) else None


def _strings(cell: Any) -> list[str]:
    """A list cell (flags, rationales) as strings: JSONL gives lists, Parquet arrays, a missing cell NaN."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [str(item) for item in cell if item is not None]
    return []


def browser_rows(labels: pd.DataFrame, pairs: Sequence[PreferencePair]) -> list[dict[str, Any]]:
    """One plain dict per labels row, in file order: the pair's texts, both orders' p and p, both
    choices, the flags, and the two decisions made here: ``disagree`` (a scored row whose AI choice
    is not the human one; an AI tie counts, as in alignment) and ``same_position``."""
    labels = labels.reset_index(drop=True)  # positions, so scored()'s index addresses rows
    matched = pairs_for_rows(labels, pairs)
    p_first, p_swapped, p = (numeric(labels, column) for column in ("p_first_order", "p_swapped_order", "p"))
    mass, ai, human = numeric(labels, "candidate_mass"), ai_choices(labels), numeric(labels, "human_choice")
    disagree = np.zeros(len(labels), dtype=bool)
    rows = scored(labels)
    disagree[rows.index[~rows["agree"].to_numpy(dtype=bool)]] = True
    flipped = same_position(labels)
    empty = [None] * len(labels)
    columns = {name: labels[name].tolist() if name in labels else empty
               for name in ("flags", "skipped_reason", "rationales_first_order", "rationales_swapped_order")}
    out = []
    for i, pair in enumerate(matched):
        rationales = [_strings(columns["rationales_first_order"][i]), _strings(columns["rationales_swapped_order"][i])]
        reason = columns["skipped_reason"][i]
        out.append({
            "id": str(pair.id), "task": pair.task, "context": pair.context,
            "response_1": pair.response_1, "response_2": pair.response_2,
            "p_first_order": _number(p_first[i]), "p_swapped_order": _number(p_swapped[i]), "p": _number(p[i]),
            "candidate_mass": _number(mass[i]), "human_choice": _choice(human[i]), "ai_choice": _choice(ai[i]),
            "flags": _strings(columns["flags"][i]), "disagree": bool(disagree[i]),
            "same_position": bool(flipped[i]), "skipped_reason": reason if isinstance(reason, str) else None,
            "rationales": rationales if any(rationales) else None,
        })
    return out


def embed_json(value: Any) -> str:
    """JSON that is safe inside a ``<script type="application/json">`` block: every ``<`` is written
    as ``\\u003c``, so no text can close the block (``</script>``) or switch the HTML parser's script
    state (``<!--<script>``); ``JSON.parse`` reads the same strings back."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c")


def render_browser(labels: pd.DataFrame, pairs: Sequence[PreferencePair], *, title: str = "rlaif pairs") -> str:
    """The browser as one HTML page; it loads nothing else."""
    rows = browser_rows(labels, pairs)
    payload = {"title": title, "flags": list(FLAGS), "rows": rows}
    page = resources.files("rlaif.analysis").joinpath(TEMPLATE).read_text(encoding="utf-8")
    before, slot, after = page.partition(DATA_SLOT)
    if not slot:
        raise RuntimeError(f"{TEMPLATE} has no {DATA_SLOT} slot for the data")
    return before + embed_json(payload) + after


def write_browser(labels: pd.DataFrame, pairs: Sequence[PreferencePair], path: str | Path, **kwargs) -> Path:
    """Write the page for ``labels``, texts taken from ``pairs``: one file that opens offline, on its own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a lone surrogate in a text (pair_hash accepts them) cannot be UTF-8: shown as "?"
    atomic_write_bytes(path, render_browser(labels, pairs, **kwargs).encode("utf-8", "replace"))
    return path
