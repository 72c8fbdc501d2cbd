"""Reading the files a fleet names (traces, engine profiles) and fleet files themselves, safely.

Every read goes through :class:`FileAccess`: the path is opened with ``O_NONBLOCK`` (a FIFO never blocks
the caller) and checked with ``fstat`` before a byte is read, so only regular files are read, never a
device, FIFO, socket or directory; at most ``max_bytes`` are read; text must be UTF-8. Where a tenant names
the path (the REST API, the controller), ``roots`` lists the only directories it may lie in (resolved,
symlinks included, by the file actually opened) and every refusal reads the same, so an error never tells
whether a path exists. The command line reads any path its user names (``roots=None``) and says exactly
what is wrong.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BYTES = 64 << 20  # fleet files, profiles and plans; traces set their own limit


class FileRefused(ValueError):
    """A file that is not read: ``reason`` says why in words fit for the person who named it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class FileAccess:
    """Where files may be read from and how much of them.

    ``roots=None``: any path (the command line's own user); ``roots=()``: none at all; otherwise only paths
    inside these directories. ``refusal`` is the one reason given for every refused tenant-named path.
    """

    roots: tuple[Path, ...] | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    refusal: str = "not a file this server reads"

    @classmethod
    def within(cls, roots: Sequence[str | Path], *, max_bytes: int = DEFAULT_MAX_BYTES,
               refusal: str = "not a file this server reads") -> FileAccess:
        """Access limited to ``roots`` (resolved now; an empty list allows nothing)."""
        return cls(tuple(Path(os.path.realpath(r)) for r in roots), max_bytes, refusal)

    @property
    def tenant(self) -> bool:
        """Whether paths come from tenants (refusals then never reveal what exists)."""
        return self.roots is not None

    def resolve(self, name: str, base_dir: Path | None = None) -> Path:
        """``name`` against ``base_dir`` when relative; a tenant's path must lie under a root."""
        if "\x00" in name:
            raise FileRefused(name, self.refusal if self.tenant else "a path must not contain NUL characters")
        path = Path(name)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if self.roots is not None and not self._inside(Path(os.path.realpath(path))):
            raise FileRefused(name, self.refusal)
        return path

    def _inside(self, real: Path) -> bool:
        return any(real == root or real.is_relative_to(root) for root in self.roots or ())

    def check(self, name: str, base_dir: Path | None = None) -> None:
        """Raise :class:`FileRefused` unless ``name`` could be read (a regular file under a root)."""
        self._read(str(name), base_dir, None)

    def read_bytes(self, name: str | Path, base_dir: Path | None = None, *, limit: int | None = None) -> bytes:
        """The file's bytes (at most ``limit`` or ``max_bytes``); :class:`FileRefused` otherwise."""
        data = self._read(str(name), base_dir, self.max_bytes if limit is None else limit)
        assert data is not None
        return data

    def _read(self, shown: str, base_dir: Path | None, cap: int | None) -> bytes | None:
        """Open, check, then read up to ``cap`` bytes (None: only check)."""
        path = self.resolve(shown, base_dir)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise FileRefused(shown, self.refusal if self.tenant else f"cannot read: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FileRefused(shown, self.refusal if self.tenant else
                                  "not a regular file (a directory, device, FIFO or socket is never read)")
            if self.roots is not None and not self._inside(_opened_path(fd, path)):
                raise FileRefused(shown, self.refusal)  # swapped for a link after the check above
            if cap is None:
                return None
            if info.st_size > cap:
                raise FileRefused(shown, f"larger than {cap:,} bytes ({info.st_size:,})")
            os.set_blocking(fd, True)
            chunks: list[bytes] = []
            size = 0
            while size <= cap:
                chunk = os.read(fd, min(1 << 20, cap + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > cap:
                raise FileRefused(shown, f"larger than {cap:,} bytes")
            return b"".join(chunks)
        except OSError as exc:
            raise FileRefused(shown, self.refusal if self.tenant else f"cannot read: {exc.strerror or exc}") from None
        finally:
            os.close(fd)

    def read_text(self, name: str | Path, base_dir: Path | None = None, *, limit: int | None = None) -> str:
        """The file as UTF-8 text (a BOM-less UTF-8 file; binary or UTF-16 is refused)."""
        return decode_utf8(self.read_bytes(name, base_dir, limit=limit), str(name))


OPEN = FileAccess()  # the command line: any path its user names


def decode_utf8(data: bytes, where: str) -> str:
    """Strict UTF-8 text (a leading UTF-8 BOM is dropped); :class:`FileRefused` naming the byte offset."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FileRefused(where, "not UTF-8 text (it starts with a UTF-16 byte-order mark; save it as UTF-8)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(where, f"not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}; a binary "
                                 "file or another encoding)") from None
    if "\x00" in text:
        raise FileRefused(where, f"not text (a NUL byte at offset {text.index(chr(0))})")
    return text.removeprefix("\ufeff")


def _opened_path(fd: int, fallback: Path) -> Path:
    """The real path of an open file (Linux: from /proc), so a link swapped in after the check is caught."""
    with contextlib.suppress(OSError):
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    return Path(os.path.realpath(fallback))
