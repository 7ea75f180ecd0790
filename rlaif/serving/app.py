"""The HTTP side of ``rlaif serve``: OpenRLHF's ``/get_reward``, ``/pairwise`` and ``/health``, on Starlette.

Every handler reads and checks its body (``validation``), hands the items to the batch
worker and awaits the answer, so a request never runs the model in the event loop. Errors
are JSON ``{"error": message, "field": field}``: 4xx for the client's mistakes, 429 with
``Retry-After`` when the queue is full, 500 with the exception when scoring itself failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rlaif.serving.batching import BatchWorker, QueueFull
from rlaif.serving.validation import MAX_BODY_BYTES, BadRequest, pairwise_items, parse_body, reward_items

log = logging.getLogger(__name__)


async def read_json(request: Request) -> dict:
    """The body as a JSON object, refused (413) as soon as it outgrows ``MAX_BODY_BYTES``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest("body", f"{declared} bytes, over this server's limit of {MAX_BODY_BYTES}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest("body", f"over this server's limit of {MAX_BODY_BYTES} bytes", 413)
        chunks.append(chunk)
    return parse_body(b"".join(chunks))


def answers(handler: Callable[[Request], Awaitable[JSONResponse]]) -> Callable[[Request], Awaitable[JSONResponse]]:
    """The handler's answer, or its failure as a JSON error with the right status."""

    async def endpoint(request: Request) -> JSONResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status)
        except QueueFull as exc:
            return JSONResponse({"error": str(exc), "field": None}, status_code=429,
                                headers={"Retry-After": str(exc.retry_after)})
        except Exception as exc:  # scoring failed: this request's answer, never the server's end
            log.exception("%s %s failed", request.method, request.url.path)
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}", "field": None}, status_code=500)

    return endpoint


def create_app(worker: BatchWorker, *, max_chars: int) -> Starlette:
    """The app around a started ``worker`` whose runner is a ``RewardService``."""
    started = time.time()

    @answers
    async def get_reward(request: Request) -> JSONResponse:
        items = reward_items(await read_json(request), max_chars)
        results = await worker.submit("reward", items)
        rewards = [result["reward"] for result in results]
        # OpenRLHF reads "rewards", "scores" (its dynamic filtering) and "extra_logs" (logged per sample)
        return JSONResponse({"rewards": rewards, "scores": rewards,
                             "extra_logs": {"direct_score": [result["score"] for result in results],
                                            "score_mass": [result["mass"] for result in results]}})

    @answers
    async def pairwise(request: Request) -> JSONResponse:
        pairs, single = pairwise_items(await read_json(request), max_chars)
        rows = await worker.submit("pairwise", pairs, prompts_per_item=2)  # both orders
        return JSONResponse(rows[0] if single else {"labels": rows})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **worker.runner.describe(),
                             "queue": {"waiting": worker.waiting, "running": worker.running,
                                       "max_queue": worker.max_queue, "max_batch": worker.max_batch},
                             "served": dict(worker.stats), "uptime_seconds": round(time.time() - started, 1)})

    async def not_found(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": f"{request.method} {request.url.path}: {exc.detail}; this server answers "
                                      "POST /get_reward, POST /pairwise, GET /health", "field": None},
                            status_code=exc.status_code)

    return Starlette(routes=[Route("/get_reward", get_reward, methods=["POST"]),
                             Route("/pairwise", pairwise, methods=["POST"]),
                             Route("/health", health, methods=["GET"])],
                     exception_handlers={404: not_found, 405: not_found})
