"""The grader's diagnosis vocabulary: stable codes, each with a sentence and a hint.

Codes name what the grader recognised, not how the code was written. ``slow`` is the one note:
it goes with a passing answer (``Result.notes``); every other code means the answer failed
(``Result.diagnosis``). ``mismatch`` is the catch-all for values that are wrong in no pattern
the grader knows.
"""

from __future__ import annotations

#: code → (what the grader saw, what to look at). Order: most specific first; when several
#: codes explain the same output equally well, the earlier one is reported.
CODES: dict[str, tuple[str, str]] = {
    "exception": (
        "your code raised an exception.",
        "read the traceback from the bottom up: the last line is the error, the line above it "
        "is where in your code it happened.",
    ),
    "timeout": (
        "your code ran longer than the time limit and was stopped.",
        "look for a loop that never ends (a while whose condition never changes) or one far "
        "larger than the input.",
    ),
    "transposed": (
        "an output holds the right values, transposed.",
        "write the shapes under each factor of the matrix product; only one order gives the "
        "shape of the array you differentiate by.",
    ),
    "missing_sum": (
        "a gradient is not summed over the batch (or is summed over the wrong axis).",
        "a parameter shared by every sample (a bias, a scale) collects the gradient of each "
        "one: sum over the batch axis (and over every position it is used at).",
    ),
    "kink_convention": (
        "the values differ only where an input is exactly at a kink.",
        "at a kink the derivative is a convention; this course takes PyTorch's (see the "
        "statement): ReLU'(0) = 0, LeakyReLU'(0) = α, the first maximum of a max-pool window.",
    ),
    "stale_weights": (
        "grad_x was computed with the weights already updated.",
        "backward computes every gradient from the forward-time weights and changes nothing; "
        "the step W ← W − lr·dL/dW belongs to update(), after backward.",
    ),
    "repeated_ids": (
        "ids that appear more than once overwrite each other's gradient instead of adding up.",
        "W[ids] += g keeps only one of the repeated rows (NumPy buffers the write); "
        "np.add.at(grad_W, ids, g) or a loop with += adds every occurrence.",
    ),
    "wrong_axis": (
        "a softmax or a reduction runs over the wrong axis.",
        "with a batch in rows, each sample's softmax and its sums run over axis=-1, "
        "with keepdims=True so the result broadcasts back.",
    ),
    "unstable": (
        "right at moderate inputs, but NaN, inf or wrong at large ones.",
        "exp overflows above about 709: subtract the row's maximum before exponentiating "
        "(softmax(z) = softmax(z − max z)), or pick a form that only exponentiates numbers ≤ 0.",
    ),
    "sign": (
        "an output has the wrong sign.",
        "follow the signs through each step of the chain rule; gradient descent subtracts "
        "the gradient.",
    ),
    "batch_mean": (
        "an output is off by the batch size: a missing or an extra 1/N.",
        "the loss is a mean over the batch, so every gradient carries its 1/N exactly once.",
    ),
    "scale": (
        "an output is off by a constant factor.",
        "look for a factor the chain rule adds (the inner derivative) or the formula cancels "
        "(the ½ in ½(y − t)²).",
    ),
    "shape": (
        "an output has the wrong shape (or is not an array).",
        "a gradient always has the shape of what it is the gradient of: dL/dW has W's shape.",
    ),
    "mutates_input": (
        "your code changed an input or a weight in place.",
        "the caller still needs its arrays: write into new ones (g * mask, not g[mask] = 0; "
        "m = β·m + …, not m *= β) and leave weights alone outside update().",
    ),
    "partial": (
        "only some entries of an output are wrong.",
        "look at the first wrong index: an edge, an overlap or a repeated index that your "
        "loop or mask treats differently.",
    ),
    "mismatch": (
        "an output differs from the reference, in no pattern the grader recognises.",
        "check the formula on the smallest case by hand, or ask for a hint.",
    ),
    "slow": (
        "right, but far slower than the reference.",
        "replace Python loops over samples or pixels by whole-array NumPy operations.",
    ),
}

#: Codes that go with a passing answer.
NOTES = ("slow",)
#: Codes in reporting order (the order of CODES).
ORDER = tuple(CODES)


def rank(code: str) -> int:
    """Position of ``code`` in the vocabulary: lower is more specific."""
    return ORDER.index(code)
