"""The small example set shipped with rlaif (examples.jsonl)."""
