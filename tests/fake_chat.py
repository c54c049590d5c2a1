"""A loopback OpenAI-compatible server standing in for the chat's LLM, deterministically.

It fills the task form from a request by rules (a file name, `a/b/c` labels, `$N`, "myself"),
and answers questions about a run the way a tool-calling model does: first a call to the tool
the question's words point at, then an answer quoting what the tool returned.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Question words -> (tool, arguments), first match wins.
TOOL_RULES = [
    (("script",), "show_script", {"role": "annotate", "model": "2"}),
    (("rejected", "why"), "model_selection", {}),
    (("hard", "example"), "hard_examples", {"n": 5}),
    (("llm", "cost", "spend"), "llm_usage", {}),
]


def fill_form(message: str, form: dict) -> dict:
    said = dict(form)
    if m := re.search(r"[\w./-]+\.(?:csv|tsv|jsonl|parquet)", message):
        said["data_path"] = m.group(0)
    if m := re.search(r",\s*(\w+(?:/\w+)+)\b", message):
        said["labels"] = m.group(1).split("/")
    if m := re.search(r"\bfor (\w+)", message):
        said["description"] = f"{m.group(1)} of short texts"
    if m := re.search(r"\$(\d+(?:\.\d+)?)", message):
        said["max_cost_usd"] = float(m.group(1))
    if "myself" in message:
        said["reviewer"] = "human"
    return said


def tool_call(question: str) -> tuple[str, dict]:
    words = question.lower()
    for keys, name, args in TOOL_RULES:
        if any(k in words for k in keys):
            return name, args
    return "run_status", {}


class FakeChatLLM:
    def __init__(self):
        self.tool_calls: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def reply(self, body: dict) -> dict:
        messages = body["messages"]
        last = messages[-1]
        if body.get("tools"):
            if last["role"] == "tool":
                return {"role": "assistant", "content": f"From the run: {last['content']}"}
            name, args = tool_call(str(last["content"]))
            self.tool_calls.append(name)
            call = {
                "id": f"call_{len(self.tool_calls)}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        text = str(last["content"])
        form = json.loads(re.search(r"Current form: (\{.*\})", text).group(1))
        message = text.split("The user says:", 1)[1]
        if "nonsense" in message:  # what a weak model sometimes says instead of JSON
            return {"role": "assistant", "content": "Sure! I can help you label data."}
        return {"role": "assistant", "content": json.dumps(fill_form(message, form))}

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
                message = fake.reply(body)
                finish = "tool_calls" if "tool_calls" in message else "stop"
                self._send(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "message": message,
                                "finish_reason": finish,
                            }
                        ],
                        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
                    }
                )

        return Handler

    def __enter__(self) -> FakeChatLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
