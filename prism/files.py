"""Files written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_whole(path: Path, data: bytes, *, prefix: str = ".prism-", suffix: str = "") -> Path:
    """Write `path` through a temporary file beside it, renamed over it: a reader sees the
    old file or the new one, never part of one, and a symlink at `path` is replaced, never
    followed. The file is created 0600 (mkstemp), so it is never readable by others, not
    even briefly."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
