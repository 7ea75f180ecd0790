"""Training targets for reward models: pairs with P(response 1 preferred), from AI labels, human labels or rankings."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from rlaif.pairs import PreferencePair


@dataclass(frozen=True)
class PreferenceTarget:
    """One training pair: P(response_1 preferred) = p. ``group`` keeps the pairs of one prompt
    (a ranking's K-choose-2 pairs) in the same batch."""

    context: str
    response_1: str
    response_2: str
    p: float
    group: str = ""


def targets_from_labels(labels: pd.DataFrame, pairs: Sequence[PreferencePair], source: str,
                        min_confidence: float = 0.0) -> list[PreferenceTarget]:
    """Training targets from a labels table (``label_pairs`` output) and its pairs.

    ``source``: "ai_soft" (p as is), "ai_hard" (1 if p > 0.5, 0 if p < 0.5; exact 0.5
    dropped), or "human" (human_choice 1 -> 1, 2 -> 0; ties and unlabeled dropped).
    ``min_confidence`` > 0 keeps only pairs with |p - 0.5| > it (AI sources; the paper's filter).
    Rows without a p (skipped, non-finite) are dropped.
    """
    if source not in ("ai_soft", "ai_hard", "human"):
        raise ValueError(f"source must be ai_soft, ai_hard or human, got {source!r}")
    by_id = {pair.id: pair for pair in pairs}
    targets = []
    for row in labels.itertuples():
        pair = by_id.get(row.id)
        if pair is None:
            raise ValueError(f"labels row {row.id!r} has no pair among the pairs given")
        if source == "human":
            if pair.human_choice not in (1, 2):
                continue
            p = 1.0 if pair.human_choice == 1 else 0.0
        else:
            if row.p is None or not math.isfinite(row.p) or (min_confidence and abs(row.p - 0.5) <= min_confidence):
                continue
            if source == "ai_hard":
                if row.p == 0.5:
                    continue
                p = 1.0 if row.p > 0.5 else 0.0
            else:
                p = float(row.p)
        targets.append(PreferenceTarget(pair.context, pair.response_1, pair.response_2, p, group=pair.context))
    return targets


def ranking_targets(context: str, ranked: Sequence[str]) -> list[PreferenceTarget]:
    """A ranking of K responses (best first) as its K-choose-2 pairs, one group (InstructGPT)."""
    return [PreferenceTarget(context, ranked[i], ranked[j], 1.0, group=context)
            for i in range(len(ranked)) for j in range(i + 1, len(ranked))]


def data_hash(targets: Sequence[PreferenceTarget]) -> str:
    payload = json.dumps([asdict(t) for t in targets], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]
