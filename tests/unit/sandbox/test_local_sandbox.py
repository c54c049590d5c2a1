"""What LocalSandbox does when the host cannot isolate a script: it refuses, naming the fix."""

from __future__ import annotations

import os

import pytest

from sandbox.base import SandboxError
from sandbox.local import LocalSandbox


def test_no_user_namespaces_for_a_non_root_runner_is_refused(tmp_path, monkeypatch):
    # An unshare that fails as it does where unprivileged user namespaces are off.
    fake = tmp_path / "bin" / "unshare"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'unshare: write failed /proc/self/uid_map' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    with pytest.raises(SandboxError, match=r"uid_map\); use --sandbox docker$"):
        LocalSandbox()


def test_missing_tools_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(SandboxError, match=r"needs unshare, setpriv, timeout .*--sandbox docker"):
        LocalSandbox()
