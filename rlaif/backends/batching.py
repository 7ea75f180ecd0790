"""Length-aware batches capped by padded tokens, not rows: the cost and memory of a forward pass
grow with rows x longest sequence, so a budget in tokens keeps both even across short and long prompts."""

from __future__ import annotations

from collections.abc import Sequence


def token_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None,
                  max_padding: float = 0.1) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size (rows x longest) stays
    within ``max_tokens`` (a longer sequence gets a batch of its own) and ``max_rows``, and
    whose rows are each padded by at most ``max_padding`` of the batch's longest.

    Longest first, so the first batch shows the peak memory; callers put results back by index.
    """
    if max_tokens < 1 or (max_rows is not None and max_rows < 1) or not 0 <= max_padding <= 1:
        raise ValueError(f"max_tokens and max_rows must be at least 1 and max_padding in [0, 1], "
                         f"got {max_tokens}, {max_rows}, {max_padding}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        # sorted longest first, so the batch's first row sets its padded width
        longest = lengths[current[0]] if current else 0
        if current and (len(current) + 1) * longest <= max_tokens and lengths[i] >= (1 - max_padding) * longest \
                and (max_rows is None or len(current) < max_rows):
            current.append(i)
        else:
            batches.append([i])
    return batches
