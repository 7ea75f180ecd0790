"""A real local HTTP server (stdlib, real sockets) that answers the OpenAI completion API from a
fixed rule and misbehaves on a script: for testing retries, timeouts and error messages.

The real-model, real-vLLM tests are in test_serving.py; this one needs no model.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def next_token_logprobs(context, vocab=50):
    """The rule the server answers with: a fixed distribution per token context."""
    rng = np.random.default_rng(sum((i + 1) * t for i, t in enumerate(context)) % 2**32)
    logits = rng.normal(size=vocab) * 2
    return logits - np.logaddexp.reduce(logits)


def _map_logprobs(value, number=None, token=None):
    """``value`` with every float passed through ``number`` and every "token_id:N" string (keys too)
    through ``token``."""
    if isinstance(value, dict):
        return {_map_logprobs(k, number, token): _map_logprobs(v, number, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_logprobs(v, number, token) for v in value]
    if isinstance(value, float) and number:
        return number(value)
    if isinstance(value, str) and token and value.startswith("token_id:"):
        return f"token_id:{token(int(value.removeprefix('token_id:')))}"
    return value


def mangled(answer, action, body):
    """The answer as the scripted fault ``action`` garbles it (see ``ScriptedServer``)."""
    choices = answer.get("choices", [])
    if action == "fewerchoices":
        return {**answer, "choices": []}
    if action == "wrongindex":
        return {**answer, "choices": [{**choice, "index": choice["index"] + 1} for choice in choices]}
    if action == "morechoices":
        decoys = [{**choice, "logprobs": _map_logprobs(choice["logprobs"], number=lambda v: v - 1.0)}
                  for choice in choices]
        return {**answer, "choices": decoys + [{**choice, "index": choice["index"] + len(choices)}
                                               for choice in choices]}
    if action == "othertokens":
        offset = 1 + max(body.get("allowed_token_ids") or [999])
        return {**answer, "choices": [{**choice, "logprobs": _map_logprobs(choice["logprobs"],
                                                                           token=lambda t: t + offset)}
                                      for choice in choices]}
    return answer


class ScriptedServer:
    """``script`` is consumed one action per request; when it runs out every request is answered
    "ok". Actions:

    - "ok": the rule's answer (``rule_answer``); "slow": the same after ``slow_seconds``;
    - an HTTP status code (int), or (status, retry_after);
    - "drop": close the connection without answering;
    - "nologprobs": the answer with its log-probs stripped;
    - "badjson": 200 with a truncated JSON body (a server mid-restart);
    - "hangbody": 200 with the full Content-Length but half the body, then a stall of up to
      ``slow_seconds`` (ended early when the server stops) and a closed connection;
    - "fewerchoices": no choices; "morechoices": a decoy choice (every log-prob 1 lower) listed
      first with index 0, the true one second with index 1; "wrongindex": the one choice with index 1;
    - "othertokens": every "token_id:N" in the log-probs renamed to a token the request did not
      allow (the values unchanged): log-probs for other tokens than asked.

    With ``upstream`` (a real server's URL) it is a faulty proxy: the answers come from there,
    headers included, and the faults above are applied to them."""

    def __init__(self, script=(), slow_seconds=2.0, upstream=None):
        self.script, self.slow_seconds, self.upstream = list(script), slow_seconds, upstream
        self.seen = []  # (path, headers, body) of every request
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        self.closing = threading.Event()  # ends stalls when the server stops
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.seen.append((self.path, dict(self.headers), body))
                    action = server.script.pop(0) if server.script else "ok"
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    self._act(action, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _act(self, action, body):
                if action == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if action == "slow":
                    server.closing.wait(server.slow_seconds)
                if isinstance(action, (int, tuple)):
                    status, retry_after = action if isinstance(action, tuple) else (action, None)
                    self._send(status, {"error": f"scripted {status}"}, retry_after)
                    return
                answer = server.answer(body, logprobs=action != "nologprobs", headers=self.headers)
                data = json.dumps(mangled(answer, action, body)).encode()
                if action == "badjson":
                    data = data[:len(data) // 2]
                self._send(200, data, hang=action == "hangbody")

            def _send(self, status, payload, retry_after=None, hang=False):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", str(retry_after))
                self.end_headers()
                if not hang:
                    self.wfile.write(data)
                    return
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                server.closing.wait(server.slow_seconds)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, body, logprobs=True, headers=None):
        if self.upstream:
            import httpx

            auth = {"Authorization": headers["Authorization"]} if headers and "Authorization" in headers else {}
            answer = httpx.post(self.upstream + self.path_of(body), json=body, headers=auth, timeout=120).json()
            if not logprobs:
                for choice in answer.get("choices", []):
                    choice["logprobs"] = None
            return answer
        return self.rule_answer(body, logprobs)

    @staticmethod
    def path_of(body):
        return "/v1/chat/completions" if "messages" in body else "/v1/completions"

    def rule_answer(self, body, logprobs=True):
        """What vLLM answers to a one-token completion with allowed_token_ids and token-id output."""
        if "messages" in body or body.get("echo") or not isinstance(body["prompt"], list):
            raise NotImplementedError("the scripted server answers token-id next-token reads only")
        table = next_token_logprobs(body["prompt"])
        allowed = body.get("allowed_token_ids") or range(len(table))
        sampled = max(allowed, key=lambda t: table[t])
        top = set(np.argsort(-table)[:body.get("logprobs") or 0].tolist()) | {sampled}
        choice = {"index": 0, "text": str(sampled), "finish_reason": "length",
                  "logprobs": {"tokens": [f"token_id:{sampled}"], "token_logprobs": [float(table[sampled])],
                               "top_logprobs": [{f"token_id:{t}": float(table[t]) for t in top}]} if logprobs else None}
        return {"id": "x", "object": "text_completion", "model": body["model"], "choices": [choice]}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
