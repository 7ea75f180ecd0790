"""Request bodies checked before anything is queued: every refusal names the field (and index) to fix.

A bad request must cost the server nothing but its answer, so all of a body is checked here,
in the event loop, before a job reaches the model: types, lengths of parallel lists, text
sizes, and that each query begins with its prompt.
"""

from __future__ import annotations

import json
from typing import Any

from rlaif.pairs import PreferencePair

#: Largest request body read, in bytes; a longer one is refused while it streams in.
MAX_BODY_BYTES = 64 * 2**20
#: Most items (queries or pairs) in one request.
MAX_ITEMS = 4096
PAIR_FIELDS = ("context", "response_1", "response_2")


class BadRequest(ValueError):
    """A request the server refuses: the HTTP status, the field at fault, and what is wrong with it."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.status = field, status


def parse_body(data: bytes) -> dict[str, Any]:
    """The JSON object a request carries."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("body", f"not JSON ({exc})", 400) from None
    if not isinstance(body, dict):
        raise BadRequest("body", f"must be a JSON object, got {type(body).__name__}")
    return body


def _text(value: Any, field: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise BadRequest(field, f"must be a string, got {_kind(value)}")
    if len(value) > max_chars:
        raise BadRequest(field, f"{len(value)} characters, over this server's limit of {max_chars} (--max-chars)",
                           413)
    return value


def _list(body: dict[str, Any], field: str, *, required: bool = True) -> list | None:
    if field not in body or body[field] is None:
        if required:
            raise BadRequest(field, "missing: a list is required")
        return None
    value = body[field]
    if not isinstance(value, list):
        raise BadRequest(field, f"must be a list, got {_kind(value)}")
    if len(value) > MAX_ITEMS:
        raise BadRequest(field, f"{len(value)} items, over this server's limit of {MAX_ITEMS} per request; "
                                  "split the request", 413)
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def reward_items(body: dict[str, Any], max_chars: int) -> list[tuple[str, str]]:
    """(context, response) for each query of an OpenRLHF ``/get_reward`` body.

    The body holds ``query`` (prompt + response, the full text), ``prompts`` (parallel to it)
    and optionally ``labels`` (OpenRLHF's reference answers; the direct scorer does not read
    them). The response is the query with its prompt cut off the front. Other fields are
    ignored, so that clients sending more keep working.
    """
    queries = _list(body, "query")
    prompts = _list(body, "prompts")
    labels = _list(body, "labels", required=False)
    for name, values in (("prompts", prompts), ("labels", labels)):
        if values is not None and len(values) != len(queries):
            raise BadRequest(name, f"{len(values)} items, but query has {len(queries)}; they must be parallel")
    items = []
    for i, (query, prompt) in enumerate(zip(queries, prompts)):
        query = _text(query, f"query[{i}]", max_chars)
        prompt = _text(prompt, f"prompts[{i}]", max_chars)
        if not query.startswith(prompt):
            raise BadRequest(f"query[{i}]", f"does not start with prompts[{i}]; a query is its prompt followed "
                                              "by the response")
        items.append((prompt, query[len(prompt):]))
    return items


def pairwise_items(body: dict[str, Any], max_chars: int) -> tuple[list[PreferencePair], bool]:
    """The pairs of a ``/pairwise`` body, and whether it was a single pair (answered as one object).

    A body is one pair (``context``, ``response_1``, ``response_2``, optional ``id``) or
    ``{"pairs": [pair, ...]}``. Unknown fields are refused: this protocol is rlaif's own, so a
    misspelt field is a mistake, not a newer client.
    """
    if "pairs" in body:
        extra = sorted(set(body) - {"pairs"})
        if extra:
            raise BadRequest(extra[0], "unknown field; a body with pairs holds nothing else")
        entries = _list(body, "pairs")
        return [_pair(entry, f"pairs[{i}]", i, max_chars) for i, entry in enumerate(entries)], False
    return [_pair(body, "", 0, max_chars)], True


def _pair(entry: Any, where: str, index: int, max_chars: int) -> PreferencePair:
    prefix = f"{where}." if where else ""
    if not isinstance(entry, dict):
        raise BadRequest(where, f"must be an object with {', '.join(PAIR_FIELDS)}, got {_kind(entry)}")
    extra = sorted(set(entry) - {*PAIR_FIELDS, "id"})
    if extra:
        raise BadRequest(f"{prefix}{extra[0]}", f"unknown field; a pair has {', '.join(PAIR_FIELDS)} and id")
    texts = {}
    for name in PAIR_FIELDS:
        if name not in entry:
            raise BadRequest(f"{prefix}{name}", "missing: a string is required")
        texts[name] = _text(entry[name], f"{prefix}{name}", max_chars)
    pair_id = entry.get("id", str(index))
    if not isinstance(pair_id, str):
        raise BadRequest(f"{prefix}id", f"must be a string, got {_kind(pair_id)}")
    return PreferencePair(pair_id, texts["context"], texts["response_1"], texts["response_2"])
