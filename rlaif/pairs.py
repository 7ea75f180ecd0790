"""The one record type every loader produces and the labeler consumes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

#: ``human_choice`` value for pairs people judged equally good.
TIE = 0
#: Values a human label may take: response 1, response 2, or a tie.
HUMAN_CHOICES = (1, 2, TIE)


class DataError(ValueError):
    """A bad input record. The message names the file, the row and the field."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 field_name: str | None = None):
        where = ", ".join(
            part for part in (
                source and f"file {source}",
                row is not None and f"row {row}",
                field_name and f"field {field_name!r}",
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.reason, self.source, self.row, self.field = message, source, row, field_name

    def at(self, source: str, row: int | None) -> "DataError":
        """The same error, located in a file and row (loaders know where; parsers don't)."""
        return DataError(self.reason, source=source, row=row, field_name=self.field)


@dataclass(frozen=True)
class PreferencePair:
    """Two responses to one context, with the human preference when known.

    ``human_choice`` is 1 or 2 (which response people preferred), ``TIE``, or None
    when the pair is unlabeled. ``task`` names where the pair comes from (for
    example ``hhh/honest``); the labeling template is chosen separately.
    """

    id: str
    context: str
    response_1: str
    response_2: str
    human_choice: int | None = None
    task: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("id", "context", "response_1", "response_2"):
            if not isinstance(getattr(self, name), str):
                raise DataError(f"must be a string, got {type(getattr(self, name)).__name__}",
                                field_name=name)
        if self.human_choice not in (*HUMAN_CHOICES, None):
            raise DataError(f"must be 1, 2, {TIE} (tie) or None, got {self.human_choice!r}",
                            field_name="human_choice")


def from_chosen_rejected(pair_id: str, context: str, chosen: str, rejected: str, *, seed: int,
                         task: str = "", metadata: dict[str, Any] | None = None) -> PreferencePair:
    """Place chosen/rejected into response slots by a seeded coin flip.

    Sources that store "chosen" first would otherwise leak the label through the
    position. The flip depends only on (seed, id), so it is the same whatever
    subset or order of the data is loaded, and it is recorded in the metadata.
    """
    chosen_first = random.Random(f"{seed}:{pair_id}").random() < 0.5
    meta = dict(metadata or {})
    meta["chosen_position"] = 1 if chosen_first else 2
    first, second = (chosen, rejected) if chosen_first else (rejected, chosen)
    return PreferencePair(pair_id, context, first, second, 1 if chosen_first else 2, task, meta)
