"""One contract, every sandbox: the same scripts give the same results in each."""

from __future__ import annotations

import os
import socket
import sys
import time

import pandas as pd
import pytest

from sandbox.base import STREAM_CAP_BYTES, TAIL_CHARS, Limits, SandboxError
from sandbox.local import LocalSandbox

LIMITS = Limits(timeout_s=120, memory_mb=2048, threads=1)


def test_script_contract_parquet_in_parquet_out(sandbox, make_script, tmp_path):
    source = tmp_path / "in" / "chunk.parquet"
    source.parent.mkdir()
    pd.DataFrame({"id": [1, 2, 3], "text": ["a", "bb", "ccc"]}).to_parquet(source)
    script = make_script(
        """
        import argparse
        import pandas as pd
        parser = argparse.ArgumentParser()
        parser.add_argument("--input")
        parser.add_argument("--output")
        args = parser.parse_args()
        frame = pd.read_parquet(args.input)
        frame["label"] = frame["text"].str.len()
        frame[["id", "label"]].to_parquet(args.output)
        print("wrote", len(frame))
        """
    )
    out_dir = tmp_path / "out"
    target = out_dir / "votes.parquet"

    result = sandbox.run(
        script,
        ["--input", str(source), "--output", str(target)],
        inputs=[source],
        output_dir=out_dir,
        limits=LIMITS,
    )

    assert result.ok, result.reason()
    assert result.stdout_tail == "wrote 3\n"
    assert result.sandbox == sandbox.name
    assert pd.read_parquet(target).to_dict("list") == {"id": [1, 2, 3], "label": [1, 2, 3]}
    # Whatever ran inside, the caller owns what it wrote.
    assert target.stat().st_uid == os.getuid()


@pytest.mark.parametrize(
    ("source", "code", "last_line"),
    [
        ("import sys; print('out'); sys.exit(3)", 3, "(no stderr)"),
        ("raise ValueError('boom')", 1, "ValueError: boom"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137, "(no stderr)"),
    ],
)
def test_exit_codes_and_reasons(sandbox, make_script, tmp_path, source, code, last_line):
    result = sandbox.run(
        make_script(source), [], inputs=[], output_dir=tmp_path / "out", limits=LIMITS
    )

    assert result.exit_code == code
    assert not result.ok
    assert not result.timed_out
    assert result.reason() == f"exit code {code}: {last_line}"


def test_stdout_and_stderr_come_back_separately(sandbox, make_script, tmp_path):
    script = make_script("import sys; print('to out'); print('to err', file=sys.stderr)")

    result = sandbox.run(script, [], inputs=[], output_dir=tmp_path / "out", limits=LIMITS)

    assert (result.stdout_tail, result.stderr_tail) == ("to out\n", "to err\n")


def test_timeout_kills_the_script(sandbox, make_script, tmp_path):
    script = make_script("import time\nprint('started', flush=True)\ntime.sleep(600)")

    result = sandbox.run(
        script, [], inputs=[], output_dir=tmp_path / "out", limits=Limits(timeout_s=2)
    )

    assert result.timed_out
    assert not result.ok
    assert 2 <= result.duration_s < 30
    assert result.reason().startswith("timed out after")
    assert result.stdout_tail == "started\n"


def test_large_output_keeps_the_tail(sandbox, make_script, tmp_path):
    # About 6 MB on stdout: more than a pipe or a log file holds at once.
    script = make_script(
        """
        import sys
        line = "x" * 99 + "\\n"
        for _ in range(60_000):
            sys.stdout.write(line)
        print("THE END")
        print("err end", file=sys.stderr)
        """
    )

    result = sandbox.run(script, [], inputs=[], output_dir=tmp_path / "out", limits=LIMITS)

    assert result.ok, result.reason()
    assert result.stdout_tail.endswith("x\nTHE END\n")
    assert len(result.stdout_tail) == TAIL_CHARS + 1  # the tail plus its leading ellipsis
    assert result.stderr_tail == "err end\n"


def test_unicode_paths_and_text(sandbox, make_script, tmp_path):
    folder = tmp_path / "données ü 日本"
    folder.mkdir()
    source = folder / "in put é.txt"
    source.write_text("héllo 日本\n", encoding="utf-8")
    out_dir = tmp_path / "sortie ✓"
    script = make_script(
        """
        import pathlib, sys
        text = pathlib.Path(sys.argv[1]).read_text(encoding="utf-8")
        pathlib.Path(sys.argv[2], "résultat.txt").write_text(text.upper(), encoding="utf-8")
        print(text, end="")
        """,
        name="scrïpt.py",
    )

    result = sandbox.run(
        script, [str(source), str(out_dir)], inputs=[folder], output_dir=out_dir, limits=LIMITS
    )

    assert result.ok, result.reason()
    assert result.stdout_tail == "héllo 日本\n"
    assert (out_dir / "résultat.txt").read_text(encoding="utf-8") == "HÉLLO 日本\n"


def test_host_secrets_stay_out_of_the_environment(sandbox, make_script, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    monkeypatch.setenv("HF_TOKEN", "hf-must-not-leak")
    script = make_script("import os\nprint(sorted(os.environ))\nos.environ['OPENAI_API_KEY']")

    result = sandbox.run(script, [], inputs=[], output_dir=tmp_path / "out", limits=LIMITS)

    assert not result.ok
    assert result.reason() == "exit code 1: KeyError: 'OPENAI_API_KEY'"
    assert "HF_TOKEN" not in result.stdout_tail
    assert "must-not-leak" not in result.stdout_tail + result.stderr_tail


def test_missing_script_or_input_is_a_sandbox_error(sandbox, make_script, tmp_path):
    with pytest.raises(SandboxError, match="script not found"):
        sandbox.run(tmp_path / "nope.py", [], inputs=[], output_dir=tmp_path / "out", limits=LIMITS)
    with pytest.raises(SandboxError, match="inputs not found"):
        sandbox.run(
            make_script("pass"),
            [],
            inputs=[tmp_path / "missing.parquet"],
            output_dir=tmp_path / "out",
            limits=LIMITS,
        )


def test_the_deadline_is_enforced_inside_the_sandbox(sandbox, make_script, tmp_path, monkeypatch):
    # The runner's own backstop is pushed far away: only the in-sandbox `timeout` can stop
    # the script in time, as it must when the runner itself has died.
    monkeypatch.setattr(sys.modules[type(sandbox).__module__], "BACKSTOP_S", 600.0)
    script = make_script("while True:\n    pass")

    result = sandbox.run(
        script, [], inputs=[], output_dir=tmp_path / "out", limits=Limits(timeout_s=2)
    )

    assert result.timed_out
    assert result.duration_s < 30


def test_nothing_the_step_started_outlives_it(sandbox, make_script, tmp_path):
    beat = tmp_path / "out" / "beat"
    beater = make_script(
        f"""
        import time
        n = 0
        while True:
            n += 1
            open({str(beat)!r}, "w").write(str(n))
            time.sleep(0.1)
        """,
        name="beater.py",
    )
    # A detached child in a session of its own; the step returns once it has beaten.
    script = make_script(
        f"""
        import os, subprocess, sys
        subprocess.Popen([sys.executable, {str(beater)!r}], start_new_session=True)
        while not os.path.exists({str(beat)!r}):
            pass
        """
    )

    result = sandbox.run(
        script, [], inputs=[beater], output_dir=tmp_path / "out", limits=Limits(timeout_s=20)
    )
    first = beat.read_text()
    time.sleep(1)

    assert result.ok, result.reason()
    assert beat.read_text() == first


def test_file_size_is_capped(sandbox, make_script, tmp_path):
    target = tmp_path / "out" / "big.bin"
    script = make_script(f"open({str(target)!r}, 'wb').write(b'x' * (3 << 20))")

    result = sandbox.run(
        script, [], inputs=[], output_dir=tmp_path / "out", limits=Limits(output_mb=1)
    )

    assert not result.ok
    assert "File too large" in result.reason()
    assert target.stat().st_size <= 1 << 20


def test_no_network_by_default(sandbox, make_script, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        script = make_script(f"import socket\nsocket.create_connection(('127.0.0.1', {port}))")

        result = sandbox.run(script, [], inputs=[], output_dir=tmp_path / "out", limits=LIMITS)

    assert not result.ok
    assert "Errno" in result.reason()


def test_the_runner_keeps_a_capped_tail_of_each_stream(sandbox, make_script, tmp_path):
    script = make_script(
        "import os\nfor _ in range(64):\n    os.write(1, b'z' * (1 << 20))\nos.write(1, b'END')"
    )

    result = sandbox.run(script, [], inputs=[], output_dir=tmp_path / "out", limits=LIMITS)

    assert result.ok, result.reason()
    assert result.stdout_tail.endswith("zEND")
    assert len(result.stdout_tail.encode()) <= STREAM_CAP_BYTES


def test_local_sandbox_refuses_a_script_that_asks_for_the_network(make_script, tmp_path):
    with pytest.raises(SandboxError, match=r"no network.*--sandbox docker"):
        LocalSandbox().run(
            make_script("pass"),
            [],
            inputs=[],
            output_dir=tmp_path / "out",
            limits=Limits(network=True),
        )
