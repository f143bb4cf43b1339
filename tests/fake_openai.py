"""A chat-completions server on loopback that answers like a cooperative model, with faults on demand.

Real HTTP (stdlib ``ThreadingHTTPServer``), so the real ``openai`` client, its retries and
its timeouts are what the tests exercise. Each distinct request body gets an ordinal the
first time it is seen; ``faults(ordinal, attempt)`` names what that attempt gets:

- ``"429"``: Too Many Requests with ``Retry-After: 1``;  ``"500"``: an internal error;
- ``"stall"``: no answer for ``stall`` seconds (past the client's timeout);
- ``"malformed"``: prose that is not JSON;  ``"violate"``: JSON that breaks the schema;
- ``"duplicate"``: the reply it gave an earlier request of the same kind about the same attachments
  (if there was none yet, the next such request gets this one's reply again);
- ``"length"``: a reply cut off at the token limit;  None: a good reply;
- ``"html"``, ``"text"``, ``"shape"``: a 200 that is not a chat completion at all (a proxy's HTML
  page, plain text, JSON of another shape).

Good replies are built from the prompt (kind, target generator, attachment captions) with
words drawn by the ordinal, so they are valid and distinct.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ("amber", "quiet", "bright", "distant", "gentle", "rapid", "hollow", "silver", "crisp", "warm", "faded",
         "vivid", "misty", "lonely", "crowded", "rustic", "golden", "frozen", "sunny", "stormy", "tiny", "vast",
         "ancient", "modern", "soft", "loud", "slow", "busy", "calm", "wild", "noble", "humble", "sharp", "dusty")
NOUNS = ("harbor", "meadow", "alley", "canyon", "garden", "station", "market", "forest", "bridge", "village",
         "studio", "island", "tower", "valley", "orchard", "beach", "courtyard", "cabin", "river", "plaza")


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"{rng.choice(WORDS)} {rng.choice(NOUNS)}" for _ in range(n))


def good_reply(prompt: str, ordinal: int) -> dict:
    """A valid reply for the request's kind, target and attachments."""
    rng = random.Random(ordinal)
    kind = re.search(r"Write one ([a-z-]+)", prompt).group(1)
    block = prompt.split("Attachments, in order", 1)[1].split("\n\n", 1)[0]
    captions = re.findall(r"^\d+\. \w+: (.+)$", block, re.M)
    seen = "; ".join(captions) or "nothing attached"
    if kind == "output-side":
        target = re.search(r"only the (\S+) generator", prompt).group(1)
        return {"instruction": f"Make something from {_words(rng, 3)}.",
                "response": {"text": "Here it is.",
                             "invocations": [{"capability": target, "prompt": f"{seen}, {_words(rng, 4)}"}]}}
    question = "Describe the attachments" if kind == "input-side" else "What can you infer"
    return {"instruction": f"{question}, thinking of {_words(rng, 3)}?",
            "response": {"text": f"They show {seen}; {_words(rng, 4)}.", "invocations": []}}


class FakeOpenAI:
    """``with FakeOpenAI(...) as server:`` serves ``server.base_url`` until the block ends."""

    def __init__(self, faults: Callable[[int, int], str | None] = lambda ordinal, attempt: None,
                 latency: float = 0.0, stall: float = 3.0, api_key: str | None = None, fenced: bool = False):
        self.faults, self.latency, self.stall, self.api_key, self.fenced = faults, latency, stall, api_key, fenced
        self.lock = threading.Lock()
        self.ordinals: dict[str, int] = {}
        self.attempts: list[dict] = []  # one per HTTP request: ordinal, attempt, time, fault, body
        self.by_attachments: dict[str, str] = {}
        self.owed: set[str] = set()
        self.models: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                outer._handle(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a client that hung up: nothing to report
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- one HTTP request ------------------------------------------------------------------
    def _send(self, h: BaseHTTPRequestHandler, status: int, doc: dict, headers: dict | None = None) -> None:
        body = json.dumps(doc).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
        except OSError:  # the client gave up (timeout) and closed the connection
            pass

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        if not h.path.endswith("/chat/completions"):
            return self._send(h, 404, {"error": {"message": f"no route {h.path}", "type": "invalid_request_error"}})
        if self.api_key and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._send(h, 401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key",
                                                 "type": "invalid_request_error"}})
        body = json.loads(raw)
        key = hashlib.sha1(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        attempt = int(h.headers.get("x-stainless-retry-count", "0"))
        with self.lock:
            ordinal = self.ordinals.setdefault(key, len(self.ordinals))
            fault = self.faults(ordinal, attempt)
            self.attempts.append({"ordinal": ordinal, "attempt": attempt, "time": time.monotonic(),
                                  "fault": fault, "body": body})
        if body["model"] == "missing-model":
            return self._send(h, 404, {"error": {"message": "The model `missing-model` does not exist",
                                                 "type": "invalid_request_error", "code": "model_not_found"}})
        if self.latency:
            time.sleep(self.latency)
        if fault == "429":
            return self._send(h, 429, {"error": {"message": "Rate limit reached", "type": "requests",
                                                 "code": "rate_limit_exceeded"}}, {"Retry-After": "1"})
        if fault == "500":
            return self._send(h, 500, {"error": {"message": "The server had an error", "type": "server_error"}})
        if fault == "stall":
            time.sleep(self.stall)
            return self._send(h, 500, {"error": {"message": "too late", "type": "server_error"}})
        if fault == "shape":
            return self._send(h, 200, {"status": "ok", "data": [1, 2, 3]})
        if fault in ("html", "text"):
            page = (b"<html><body><h1>Welcome to the proxy</h1></body></html>" if fault == "html"
                    else b"upstream temporarily unavailable, try later")
            try:
                h.send_response(200)
                h.send_header("Content-Type", "text/html" if fault == "html" else "text/plain")
                h.send_header("Content-Length", str(len(page)))
                h.end_headers()
                h.wfile.write(page)
            except OSError:
                pass
            return
        prompt = body["messages"][-1]["content"]
        # same kind, target and attachments: a repeat of that reply is a near-duplicate, not a misfit
        block = prompt.split("\n", 1)[0] + prompt.split("Attachments, in order", 1)[1].split("\n\n", 1)[0]
        finish = "stop"
        if fault == "malformed":
            content = "Sure! Here is an example: {instruction: describe it"
        elif fault == "violate":
            content = json.dumps({"instruction": "Smell this.", "response": {
                "text": "", "invocations": [{"capability": "text-to-smell", "prompt": "roses"}]}})
        elif (fault == "duplicate" or block in self.owed) and block in self.by_attachments:
            self.owed.discard(block)
            content = self.by_attachments[block]
        else:
            if fault == "duplicate":  # nothing to repeat yet: repeat this one next time it comes up
                self.owed.add(block)
            content = json.dumps(good_reply(prompt, ordinal))
            if fault == "length":
                content, finish = content[: len(content) // 2], "length"
        if finish == "stop":
            self.by_attachments.setdefault(block, content)
        if self.fenced:
            content = f"Here is the example you asked for:\n```json\n{content}\n```"
        words = sum(len(m["content"].split()) for m in body["messages"])
        self._send(h, 200, {
            "id": f"chatcmpl-{ordinal}-{attempt}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": words, "completion_tokens": len(content.split()),
                      "total_tokens": words + len(content.split())}})

    # -- what the tests look at ---------------------------------------------------------------
    def first_attempts(self) -> list[dict]:
        return [a for a in self.attempts if a["attempt"] == 0]
