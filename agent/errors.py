"""One hierarchy for the errors the `autoannotator` commands show as one line, not a traceback.

UserError: the input is wrong (a file, a flag, a hub, a model id) and the user can fix it.
RunError: a step of the run failed (a script, the LLM's budget); its message says where to look.
The command line catches both and exits 2 with the message; anything else is a bug and keeps
its traceback. The concrete classes also keep the built-in base they had (ValueError,
LookupError, RuntimeError), so code that catches those still does.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message tells the user what to change."""


class RunError(Exception):
    """A step of the run failed: the message names the step and where its log is."""


class StepFailed(RunError, RuntimeError):
    """A sandboxed script failed; the message names the step and where its log is."""


class ScriptUnavailable(StepFailed):
    """No script for one committee member passed its checks (its kind has no template that
    runs it, and no written or cached script did); the run can go on without that member."""

    def __init__(self, message: str, model_id: str) -> None:
        super().__init__(message)
        self.model_id = model_id


class Rejected(RunError):
    """A generated script failed a check; `stage` says which, `stderr` is its error output if
    it ran. Codegen repairs on it; it never leaves the verifier as a run's failure."""

    def __init__(self, stage: str, reason: str, stderr: str = "") -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.stderr = stderr
