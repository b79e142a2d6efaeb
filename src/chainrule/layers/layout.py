"""Memory layout of image batches: (N, C, H, W) arrays held channels-last between layers.

Every image layer takes and returns arrays of shape (N, C, H, W) (PyTorch's order; that is the
public contract). In memory, Conv2D's matrix product makes its output channels-last: row
(n, i, j) of Z = X_col W_mat holds pixel (n, i, j)'s C channels, and the next Conv2D's im2col
wants exactly that order. So inside a model the layers between two convolutions (BatchNorm,
MaxPool2D, ReLU) work on, and hand on, (N, C, H, W) views of channels-last memory (N, H, W, C)
instead of reordering the data at every layer. A layer on its own returns C-contiguous arrays
(``Layer.contiguous_output``, which a Sequential turns off for its layers), and so does a
Sequential at its boundary.
"""

from __future__ import annotations

import numpy as np


def pixel_rows(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) as the matrix (N·H·W, C), one row per pixel holding its C channels.

    A view when x is in channels-last memory (as a Conv2D output is), one copy otherwise.
    """
    return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


def images(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Pixel rows (N·H·W, C) back as the (N, C, H, W) view of that channels-last memory."""
    n, c, h, w = shape
    return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)

