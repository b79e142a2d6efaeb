"""Labelled 2-D points read from CSV text: what is accepted, and the line each error names."""

import numpy as np
import pytest

from chainrule.data import read_points_csv


def test_reads_rows_with_header_blank_lines_spaces_and_crlf():
    x, y = read_points_csv("x1,x2,label\r\n0.5, -1,0\r\n\r\n 2e-1 ,3,1\n-4,0.25,2\n")
    np.testing.assert_array_equal(x, np.array([[0.5, -1], [0.2, 3], [-4, 0.25]], np.float32))
    np.testing.assert_array_equal(y, [0, 1, 2])
    assert x.dtype == np.float32 and y.dtype == np.int64


def test_without_header():
    x, y = read_points_csv("1,2,1\n3,4,0\n")
    assert x.shape == (2, 2) and y.tolist() == [1, 0]


@pytest.mark.parametrize("text, message", [
    ("x1,x2,label\n1,2,0\n3,4\n", r"^line 3: expected 3 comma-separated values x1,x2,label, "
                                  r"got 2: '3,4'$"),
    ("1,2,0\n1,2,1,5\n", r"^line 2: expected 3 .* got 4"),
    ("1,2,0\n1,abc,1\n", r"^line 2: x2 must be a finite number, got 'abc'$"),
    ("1,2,0\nnan,2,1\n", r"^line 2: x1 must be a finite number, got 'nan'$"),
    ("1,2,0\n1,inf,1\n", r"^line 2: x2 must be a finite number, got 'inf'$"),
    ("1,2,0\n1,2,-1\n", r"^line 2: label must be an integer class 0, 1, …, got '-1'$"),
    ("1,2,0\n1,2,1.5\n", r"^line 2: label must be an integer .* got '1.5'$"),
    ("1,2,0\n1,2,10\n", r"^line 2: label 10 is more than 10 classes allow"),
    ("1,2,0\n1,2,0\n", r"every row has label 0: a classifier needs at least two classes"),
    ("1,2,0\n1,2,2\n", r"labels go up to 2 but class 1 never occur"),
    ("x1,x2,label\n\n", r"the file holds no data rows"),
    ("", r"the file holds no data rows"),
])
def test_errors_name_the_line_and_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        read_points_csv(text)


def test_row_limit():
    text = "".join(f"{i},{i},{i % 2}\n" for i in range(6))
    assert len(read_points_csv(text, max_rows=6)[1]) == 6
    with pytest.raises(ValueError, match=r"^line 6: the file has more than 5 data rows"):
        read_points_csv(text, max_rows=5)
