"""`autoannotator chat` driven in a real terminal (tmux): request, edit, confirm, review, ask."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from agent.cli.review import label_keys
from tests.fixtures.chat import FakeChatLLM
from tests.fixtures.keywords import LABELS, write_data

ROOT = Path(__file__).resolve().parents[2]
KEY = {label: key for key, label in label_keys(LABELS).items()}
WAIT_S = 300  # generous: the committee runs on 2 shared cores

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Terminal:
    """A tmux pane running one command; keys in, screen text out."""

    def __init__(self, name: str, command: str):
        self.name = name
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "50", command],
            check=True,
        )

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-J", "-t", self.name, "-S", "-5000"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def send(self, text: str, enter: bool = True) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)
        if enter:
            subprocess.run(["tmux", "send-keys", "-t", self.name, "Enter"], check=True)

    def wait_for(self, pattern: str, count: int = 1) -> str:
        """The screen once `pattern` shows `count` times; fails with the screen otherwise."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            screen = self.screen()
            if len(re.findall(pattern, screen)) >= count:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"no {pattern!r} (x{count}) on screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False)


def test_chat_request_confirm_review_and_questions(tmp_path, hub_dir):
    data = write_data(tmp_path / "tweets.csv", 30)
    gold = pd.read_csv(data, keep_default_na=False)["gold"].tolist()
    run_dir = tmp_path / "run"
    with FakeChatLLM() as fake:
        env = {
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "test",
            "AUTOANNOTATOR_LLM_MODEL": "fake",
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT),
        }
        command = " ".join(
            [
                f"cd {shlex.quote(str(ROOT))} &&",
                "env",
                *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
                shlex.quote(sys.executable),
                "-m agent.cli.app chat --sandbox local --device cpu",
                f"--hub {shlex.quote(str(hub_dir))} --run-dir {shlex.quote(str(run_dir))};",
                "sleep 600",  # keep the pane for capture-pane after the program ends
            ]
        )
        term = Terminal(f"aa-chat-{os.getpid()}", command)
        try:
            term.wait_for(r"you> ")
            term.send(f"label {data} for sentiment, negative/neutral/positive")
            term.wait_for(r"Run it\?")
            assert "at most 29 LLM review calls" in term.screen()
            term.send("reviewer=human; chunk_size=16")
            screen = term.wait_for(r"Run it\?", count=2)
            assert re.search(r"reviewer\W+human", screen)
            term.send("y")
            answered = 0
            while True:
                screen = term.wait_for(
                    r"hard sample \d+/\d+\s+id \d+(?![\s\S]*saved)|done: ", count=1
                )
                if "done: " in screen:
                    break
                sample_id = int(re.findall(r"hard sample \d+/\d+\s+id (\d+)", screen)[-1])
                term.send(KEY[gold[sample_id]], enter=False)
                answered += 1
                term.wait_for(r"saved ", count=answered)
            assert answered > 0
            term.send("how many went to the LLM?")
            term.wait_for(r"From the run: [\s\S]*rows_sent_to_review")
            term.send("/models")
            screen = term.wait_for(r"why not")
            assert re.search(r"tiny.sentiment-0\W+yes", screen)
            term.send("/quit")
        finally:
            term.close()
    assert fake.tool_calls == ["llm_usage"]

    labels = pd.read_csv(run_dir / "labels.csv", keep_default_na=False, dtype=str)
    labels = labels.rename(columns=lambda name: name.removeprefix("aa_"))
    human = labels[labels["source"] == "human"]
    assert len(human) == answered
    assert (human["label"] == [gold[int(i)] for i in human["id"]]).all()
    assert set(labels["source"]) <= {"committee", "human", "skipped"}
