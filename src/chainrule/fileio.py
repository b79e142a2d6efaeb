"""Writing files so that a crash leaves either the old file or the complete new one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write(path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``.

    The temporary file is ``.{name}.{8 hex digits}.tmp`` in the same folder (``os.replace`` is
    atomic only within one file system); a failure at any point, Ctrl-C included, removes it
    and leaves an existing ``path`` untouched. The data is flushed to disk before the rename.
    The file gets the permissions an ordinary ``open`` would give (0o666 minus the umask), not
    the owner-only 0o600 of ``tempfile.mkstemp``.

    Args:
        path: the file to write; its folder is created if needed.
        write: a function that writes the content to a binary file object.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
