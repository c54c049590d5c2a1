"""sandbox.outputs: what a script left behind is walked by lstat and read only within bounds."""

import os

import pytest

from sandbox.outputs import UnsafeOutput, inspect_outputs, read_bytes_bounded

CAPS = {"max_file_bytes": 100, "max_total_bytes": 120, "max_files": 3}


@pytest.fixture
def out(tmp_path):
    directory = tmp_path / "out"
    (directory / "sub").mkdir(parents=True)
    (directory / "votes.parquet").write_bytes(b"x" * 10)
    (directory / "sub" / "weights").write_bytes(b"y" * 20)
    return directory


def test_regular_files_in_nested_directories_pass(out):
    found = inspect_outputs(out, **CAPS)
    assert sorted(p.relative_to(out).as_posix() for p in found) == ["sub/weights", "votes.parquet"]


@pytest.mark.parametrize(
    ("plant", "reason"),
    [
        (lambda d, host: os.symlink(host, d / "metrics.json"), "metrics.json is a symlink"),
        (lambda d, host: os.symlink(host.parent, d / "sub" / "dir"), "is a symlink"),
        (lambda d, host: os.link(host, d / "votes2.parquet"), "is a hard link"),
        (lambda d, host: os.mkfifo(d / "metrics.json"), "is a FIFO"),
        (lambda d, host: os.symlink("/dev/zero", d / "metrics.json"), "is a symlink"),
        (lambda d, host: (d / "big").write_bytes(b"z" * 101), "big is 101 bytes"),
        (lambda d, host: (d / "sub" / "more").write_bytes(b"z" * 100), "bytes in all"),
        (lambda d, host: [(d / n).touch() for n in "abc"], "more than 3 files"),
    ],
)
def test_anything_but_small_regular_files_is_refused(out, tmp_path, plant, reason):
    host = tmp_path / "host-secret.txt"
    host.write_text("secret")
    plant(out, host)
    with pytest.raises(UnsafeOutput, match=reason) as caught:
        inspect_outputs(out, **CAPS)
    assert "secret" not in caught.value.reason


def test_a_socket_and_a_linked_root_are_refused(tmp_path):
    import socket

    out = tmp_path / "o"
    out.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(out / "s"))
        with pytest.raises(UnsafeOutput, match="is a socket"):
            inspect_outputs(out, **CAPS)
    os.symlink(out, tmp_path / "link")
    with pytest.raises(UnsafeOutput, match="is a symlink"):
        inspect_outputs(tmp_path / "link", **CAPS)


def test_bounded_reads_follow_nothing_block_on_nothing_and_stop_at_the_limit(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"12345")
    assert read_bytes_bounded(plain, 5) == b"12345"
    with pytest.raises(UnsafeOutput, match="over 4 bytes"):
        read_bytes_bounded(plain, 4)
    os.symlink("/dev/zero", tmp_path / "zero")
    with pytest.raises(UnsafeOutput, match="symlink"):
        read_bytes_bounded(tmp_path / "zero", 1 << 20)
    with pytest.raises(UnsafeOutput, match="device"):
        read_bytes_bounded("/dev/zero", 1 << 20)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafeOutput, match="FIFO"):
        read_bytes_bounded(tmp_path / "fifo", 10)
    os.link(plain, tmp_path / "second-name")
    with pytest.raises(UnsafeOutput, match="hard link"):
        read_bytes_bounded(plain, 10)
    with pytest.raises(FileNotFoundError):
        read_bytes_bounded(tmp_path / "missing", 10)
