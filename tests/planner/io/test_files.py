"""Reading files safely: regular files only (never a device or FIFO), bounded, UTF-8, and tenant paths only
under allow-listed directories with one message for every refusal."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from planner.io.files import OPEN, FileAccess, FileRefused, decode_utf8
from planner.io.traces import load_trace


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("héllo", encoding="utf-8")
    assert OPEN.read_text(tmp_path / "a.txt") == "héllo"


def test_dev_zero_is_refused_without_reading() -> None:
    with pytest.raises(FileRefused, match="not a regular file"):
        OPEN.read_bytes("/dev/zero")


def test_a_fifo_is_refused_at_once_and_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(FileRefused, match="not a regular file"):
        OPEN.read_bytes(fifo)
    assert time.monotonic() - started < 1.0  # no writer ever opens it: a blocking open would hang here
    with pytest.raises(ValueError, match="pipe.csv:1: \\(file\\): not a regular file"):
        load_trace(fifo)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileRefused, match="not a regular file"):
        OPEN.read_bytes(tmp_path)


def test_files_over_the_limit_are_refused(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 2000)
    with pytest.raises(FileRefused, match="larger than 1,000 bytes"):
        FileAccess(max_bytes=1000).read_bytes(tmp_path / "big")


@pytest.mark.parametrize(("data", "phrase"), [
    (b"\xff\xfeh\x00i\x00", "UTF-16 byte-order mark"),
    (b"ok\x00\x01\x02", "NUL byte"),
    (b"caf\xe9", "not UTF-8 text (byte 3 is 0xe9"),
])
def test_text_that_is_not_utf8_is_refused(data: bytes, phrase: str) -> None:
    with pytest.raises(FileRefused, match=phrase.replace("(", "\\(")):
        decode_utf8(data, "f")


def test_tenant_paths_outside_the_allow_list_are_refused_without_revealing_existence(tmp_path: Path) -> None:
    allowed = tmp_path / "traces"
    allowed.mkdir()
    (allowed / "ok.csv").write_text("x", encoding="utf-8")
    secret = tmp_path / "secret.csv"
    secret.write_text("x", encoding="utf-8")
    access = FileAccess.within([allowed])
    assert access.read_text(allowed / "ok.csv") == "x"
    assert access.read_text("ok.csv", allowed) == "x"
    reasons = set()
    for name in (str(secret), str(tmp_path / "missing.csv"), "/etc/passwd", "/dev/zero", "../secret.csv",
                 str(allowed / "missing.csv"), str(allowed)):
        with pytest.raises(FileRefused) as info:
            access.read_text(name, allowed)
        reasons.add(info.value.reason)
    assert reasons == {"not a file this server reads"}


def test_a_link_inside_the_allow_list_to_a_file_outside_is_refused(tmp_path: Path) -> None:
    allowed = tmp_path / "traces"
    allowed.mkdir()
    (tmp_path / "secret.csv").write_text("x", encoding="utf-8")
    (allowed / "link.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(FileRefused, match="not a file this server reads"):
        FileAccess.within([allowed]).read_text(allowed / "link.csv")


def test_no_roots_allows_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x", encoding="utf-8")
    with pytest.raises(FileRefused, match="not a file this server reads"):
        FileAccess.within([]).read_text(tmp_path / "a")


def test_a_fifo_in_the_allow_list_does_not_block_a_thread(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    done = threading.Event()

    def read() -> None:
        try:
            FileAccess.within([tmp_path]).read_bytes(tmp_path / "p")
        except FileRefused:
            done.set()

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(2.0)
    assert done.is_set()
