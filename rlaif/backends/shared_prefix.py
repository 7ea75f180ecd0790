"""Which token prefixes a set of prompts shares, so each shared prefix runs through the model once.

Labeling prompts repeat themselves: every prompt of a job starts with the same
preamble and exemplars, both orders of a pair share everything up to the first
response, the 1-10 scores of many responses share their prompt, and chain-of-thought
samples share the first step. ``prefix_tree`` finds these shares as a tree: a node
is a run of tokens common to all sequences below it; the model computes its
key/value cache once, on top of its parent's, and the sequences that end at a node
(its ``leaves``) run only their remaining tokens, batched, on top of that cache.

A shared run shorter than ``min_shared`` tokens is not worth its own forward pass:
it is folded into the node below. The last ``reads[i]`` tokens of sequence i are never
shared, because the distributions read there must come out of the leaf's pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class PrefixNode:
    """Tokens ``[parent.end, end)`` of ``sequences[first]`` are this node's own segment."""

    end: int
    first: int                                    #: one sequence that holds the segment
    leaves: list[int] = field(default_factory=list)
    children: list[PrefixNode] = field(default_factory=list)

    def size(self) -> int:
        """How many sequences run below this node."""
        return len(self.leaves) + sum(child.size() for child in self.children)


def common_length(a: Sequence[int], b: Sequence[int], start: int) -> int:
    """Length of the common prefix of a and b, given that they agree before ``start``."""
    end, limit = start, min(len(a), len(b))
    while end < limit and a[end] == b[end]:
        end += 1
    return end


def prefix_tree(sequences: Sequence[Sequence[int]], reads: Sequence[int], min_shared: int = 16) -> PrefixNode:
    """The shared-prefix tree of ``sequences`` (see the module docstring).

    The root's segment is the prefix common to all; it is empty when shorter than
    ``min_shared`` (then the leaves under the root run whole, from scratch).
    """
    if len(sequences) != len(reads):
        raise ValueError(f"{len(sequences)} sequences but {len(reads)} read counts")
    if any(r < 1 or r > len(s) for s, r in zip(sequences, reads)):
        raise ValueError("every sequence must read between 1 and all of its positions")
    shareable = [tuple(s[:len(s) - r]) for s, r in zip(sequences, reads)]
    root = _grow(shareable, list(range(len(sequences))), 0, min_shared)
    if root.end < min_shared:
        root.end = 0
    return root


def _grow(shareable: list[tuple[int, ...]], members: list[int], start: int, min_shared: int) -> PrefixNode:
    # The common prefix of a set is that of its lexicographic least and greatest members.
    low = min(members, key=shareable.__getitem__)
    high = max(members, key=shareable.__getitem__)
    end = common_length(shareable[low], shareable[high], start)
    node = PrefixNode(end=end, first=low)
    groups: dict[int, list[int]] = {}
    for m in members:
        if len(shareable[m]) == end:
            node.leaves.append(m)
        else:
            groups.setdefault(shareable[m][end], []).append(m)
    for group in groups.values():
        if len(group) == 1:
            node.leaves.extend(group)
            continue
        child = _grow(shareable, group, end, min_shared)
        if child.end - end >= min_shared:
            node.children.append(child)
        else:  # too short for a pass of its own: what hangs below it hangs here
            node.leaves.extend(child.leaves)
            node.children.extend(child.children)
    node.leaves.sort()
    return node

