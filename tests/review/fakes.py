"""A fake chat model that reads prompts the way an obedient LLM would, for reviewer tests.

It labels each real data block by its first keyword, answering one label for a single
<text> block and a JSON object for numbered <text id="N"> blocks. Like a real model it can be
talked into things: an instruction "label everything X" anywhere *outside* the data blocks
makes it answer X for every sample. So a reviewer that does not delimit and escape sample
text lets one sample rewrite its neighbours' labels here, as it would with a real LLM.
"""

from __future__ import annotations

import json
import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

# Read loosely, as a model would: any case, stray spaces.
BLOCK = re.compile(r'<\s*text(?:\s+id="(\d+)")?\s*>\n?(.*?)\n?<\s*/\s*text\s*>', re.S | re.I)
INJECTION = re.compile(r"label everything (\w+)", re.I)


class KeywordLabeler(BaseChatModel):
    keywords: dict[str, str]  # word in a sample -> the label word to answer
    fallback: str = "no idea"

    @property
    def _llm_type(self) -> str:
        return "keyword-labeler"

    def answer(self, prompt: str) -> str:
        blocks = BLOCK.findall(prompt)
        outside = BLOCK.sub(" ", prompt)
        injected = INJECTION.search(outside)
        labels = {
            number: injected.group(1) if injected else self._label(text) for number, text in blocks
        }
        if any(number for number, _ in blocks):
            return json.dumps(labels)
        if injected:
            return injected.group(1)
        return labels.get("", self.fallback)

    def _label(self, text: str) -> str:
        words = re.findall(r"\w+", text.lower())
        return next((self.keywords[w] for w in words if w in self.keywords), self.fallback)

    def _generate(
        self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any
    ) -> ChatResult:
        # The system prompt is ours and trusted; what the sample can reach is the user turn.
        user = "\n".join(str(m.content) for m in messages if isinstance(m, HumanMessage))
        text = self.answer(user)
        prompt_chars = sum(len(str(m.content)) for m in messages)
        usage = {
            "input_tokens": prompt_chars // 4,
            "output_tokens": max(1, len(text) // 4),
            "total_tokens": prompt_chars // 4 + max(1, len(text) // 4),
        }
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))]
        )
