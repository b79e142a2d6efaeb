"""Labelled 2-D points from CSV text: ``x1,x2,label`` rows, checked line by line.

``read_points_csv(text)`` is what ``chainrule studio`` trains on when a CSV is uploaded: every
row two finite coordinates and an integer class label, the labels numbering the classes
0 … C − 1 (each at least once). The first message names the line and what was wrong with it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAX_POINT_CLASSES", "read_points_csv"]

#: The most classes a points file may hold (labels 0 … 9).
MAX_POINT_CLASSES = 10


def _number(field: str) -> float | None:
    try:
        value = float(field)
    except ValueError:
        return None
    return value


def read_points_csv(text: str, max_rows: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Parse CSV text of ``x1,x2,label`` rows into points and labels.

    A first line whose first field is not a number is a header and skipped; blank lines are
    skipped; fields may be padded with spaces; lines may end in CRLF.

    Args:
        text: the file's contents.
        max_rows: the most data rows accepted.

    Returns:
        x: (N, 2) float32; y: (N,) int64 in 0 … C − 1, every class present, 2 ≤ C ≤ 10.

    Raises:
        ValueError: ``line 7: …`` for a row that is not two finite numbers and an integer label
            ≥ 0, for too many rows, for fewer than two classes or a missing class.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected CSV text, got {type(text).__name__}")
    rows, labels = [], []
    first = True
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if first:
            first = False
            if _number(fields[0]) is None:
                continue  # the header
        shown = line if len(line) <= 60 else line[:57] + "..."
        if len(fields) != 3:
            raise ValueError(f"line {number}: expected 3 comma-separated values x1,x2,label, "
                             f"got {len(fields)}: {shown!r}")
        x1, x2 = _number(fields[0]), _number(fields[1])
        for name, value, field in (("x1", x1, fields[0]), ("x2", x2, fields[1])):
            if value is None or not math.isfinite(value):
                raise ValueError(f"line {number}: {name} must be a finite number, got "
                                 f"{field!r}")
        label = fields[2]
        if not label.isdigit():
            raise ValueError(f"line {number}: label must be an integer class 0, 1, …, got "
                             f"{label!r}")
        if int(label) >= MAX_POINT_CLASSES:
            raise ValueError(f"line {number}: label {int(label)} is more than "
                             f"{MAX_POINT_CLASSES} classes allow (labels 0 … "
                             f"{MAX_POINT_CLASSES - 1})")
        if len(rows) == max_rows:
            raise ValueError(f"line {number}: the file has more than {max_rows:,} data rows, "
                             f"the limit; send a sample of it")
        rows.append((x1, x2))
        labels.append(int(label))
    if not rows:
        raise ValueError("the file holds no data rows; expected lines of x1,x2,label such as "
                         "0.5,-1.2,1")
    y = np.asarray(labels, dtype=np.int64)
    found = np.unique(y)
    classes = int(found[-1]) + 1
    if len(found) < 2:
        raise ValueError(f"every row has label {int(found[0])}: a classifier needs at least "
                         "two classes")
    if len(found) < classes:
        missing = sorted(set(range(classes)) - set(found.tolist()))
        raise ValueError(f"the labels go up to {classes - 1} but class"
                         f"{'es' if len(missing) > 1 else ''} "
                         f"{', '.join(map(str, missing))} never occur; labels must number the "
                         f"classes 0 … C − 1")
    return np.asarray(rows, dtype=np.float32), y

