"""A loopback OpenAI-compatible server standing in for the chat's LLM, deterministically.

It fills the task form from a request by rules (a file name, `a/b/c` labels, `$N`, "myself"),
and answers questions about a run the way a tool-calling model does: first a call to the tool
the question's words point at, then an answer quoting what the tool returned.
"""

from __future__ import annotations

import json
import re

from tests.fake_openai import LoopbackChatServer

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


class FakeChatLLM(LoopbackChatServer):
    def __init__(self):
        self.tool_calls: list[str] = []
        super().__init__()

    def complete(self, body: dict) -> tuple[dict, dict]:
        return self.reply(body), {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}

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
