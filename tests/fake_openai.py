"""A minimal OpenAI-compatible chat server on loopback, standing in for a paid endpoint.

It answers like a careful labeler (the label its keyword in the sample implies; a JSON object
for a batch of numbered samples) and counts every request per prompt, so tests can prove that
no prompt is ever paid for twice. With `count_tokens` it reports ~4 characters per token, as a
metered API would bill, instead of a constant.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackChatServer:
    """An OpenAI-compatible chat completions server on loopback; `complete` decides each answer."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def complete(self, body: dict) -> tuple[dict, dict]:
        """(the assistant message, the token usage) for one chat completions request body."""
        raise NotImplementedError

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                message, usage = fake.complete(body)
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                self._send(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "fake"),
                        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                        "usage": usage,
                    }
                )

        return Handler

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeOpenAI(LoopbackChatServer):
    def __init__(
        self,
        labels: list[str],
        keywords: dict[str, str] | None = None,
        count_tokens: bool = False,
        fallback: str = "no idea",  # the answer for a sample without a keyword
    ):
        self.labels = labels
        self.fallback = fallback
        self.count_tokens = count_tokens
        self.keywords = keywords or {label: label for label in labels}
        self.requests: Counter[str] = Counter()
        super().__init__()

    def complete(self, body: dict) -> tuple[dict, dict]:
        prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        self.requests[prompt] += 1
        answer = self.answer(prompt)
        return {"role": "assistant", "content": answer}, self.usage(prompt, answer)

    def answer(self, prompt: str) -> str:
        """The label of the first keyword in the last <text> block (the sample itself), or
        for numbered <text id="N"> blocks a JSON object of each one's label."""
        numbered = re.findall(r'<text id="(\d+)">(.*?)</text>', prompt, flags=re.S)
        if numbered:
            return json.dumps({number: self._label(text) for number, text in numbered})
        blocks = re.findall(r"<text>(.*?)</text>", prompt, flags=re.S)
        return self._label(blocks[-1] if blocks else prompt)

    def _label(self, text: str) -> str:
        words = re.findall(r"\w+", text.lower())
        return next((self.keywords[w] for w in words if w in self.keywords), self.fallback)

    def usage(self, prompt: str, answer: str) -> dict:
        if not self.count_tokens:
            return {"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42}
        tokens_in, tokens_out = max(1, len(prompt) // 4), max(1, len(answer) // 4)
        return {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
