"""Which exercises a learner has passed, and when: a JSON file in the user's data directory.

    $XDG_DATA_HOME/chainrule/progress.json      (default ~/.local/share/chainrule/progress.json)

    {"version": 1, "exercises": {"dense": {"passed": "2025-05-01T10:00:00+00:00",
                                           "last_checked": "…", "last_ok": true}}}

``passed`` is the first time the exercise passed and stays once set; ``last_checked`` and
``last_ok`` follow every recorded check. Writes go through a temporary file and a rename, so a
crash never leaves half a file. A file that cannot be read counts as no progress.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from ..serialization import atomic_write

VERSION = 1


def path() -> Path:
    """The progress file (an XDG_DATA_HOME that is not absolute is ignored, as the spec says)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "chainrule" / "progress.json"


def load() -> dict:
    """{exercise name: {"passed", "last_checked", "last_ok"}}; empty without a readable file."""
    try:
        data = json.loads(path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("exercises") if isinstance(data, dict) else None
    return {k: v for k, v in entries.items() if isinstance(v, dict)} \
        if isinstance(entries, dict) else {}


def passed() -> dict[str, str]:
    """{exercise name: when it first passed} for the exercises passed so far."""
    return {name: entry["passed"] for name, entry in load().items() if entry.get("passed")}


def record(result) -> None:
    """Store the outcome of a check (a pass is kept for good)."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    entries = load()
    entry = entries.setdefault(result.exercise, {})
    entry["last_checked"] = now
    entry["last_ok"] = bool(result.ok)
    if result.ok and not entry.get("passed"):
        entry["passed"] = now
    _write(entries)


def reset() -> bool:
    """Forget all progress; returns whether there was a file."""
    try:
        path().unlink()
    except FileNotFoundError:
        return False
    return True


def _write(entries: dict) -> None:
    text = json.dumps({"version": VERSION, "exercises": entries}, indent=2, sort_keys=True)
    atomic_write(path(), lambda f: f.write((text + "\n").encode("utf-8")))
