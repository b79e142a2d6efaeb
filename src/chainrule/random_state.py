"""A random Generator's state as an array, so that it travels with a model's other state.

Layers that draw (Dropout's masks, RandomShift's offsets) own a ``np.random.default_rng``
Generator, whose bit generator is PCG64: a 128-bit state, a 128-bit increment and a buffered
32-bit half word. Written as six uint64 words it sits in ``state_dict()`` next to the weights,
is saved and copied with them, and a run resumed from it draws exactly what the uninterrupted
run would have.
"""

from __future__ import annotations

import numpy as np

_WORD = (1 << 64) - 1

#: The array form: [state high, state low, increment high, increment low, has_uint32, uinteger].
SHAPE = (6,)
DTYPE = np.dtype(np.uint64)


def state_array(generator: np.random.Generator) -> np.ndarray:
    """The generator's whole state as a (6,) uint64 array (a new array).

    Raises:
        TypeError: for a generator whose bit generator is not PCG64.
    """
    state = generator.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        raise TypeError(
            f"only PCG64 generators (np.random.default_rng) can be saved, got "
            f"{state.get('bit_generator')!r}"
        )
    s, inc = state["state"]["state"], state["state"]["inc"]
    return np.array([s >> 64, s & _WORD, inc >> 64, inc & _WORD, state["has_uint32"],
                     state["uinteger"]], dtype=DTYPE)


def check_state_array(value, what: str) -> np.ndarray:
    """``value`` as a (6,) uint64 array of a valid PCG64 state.

    Raises:
        ValueError: naming ``what``, for another shape, dtype or an invalid state.
    """
    value = np.asarray(value)
    if value.shape != SHAPE or value.dtype != DTYPE:
        raise ValueError(
            f"{what} must be a random state, a (6,) uint64 array, got shape {value.shape} and "
            f"dtype {value.dtype}"
        )
    if int(value[4]) > 1 or int(value[5]) >= 1 << 32:
        raise ValueError(f"{what} is not a valid PCG64 state (has_uint32 must be 0 or 1, "
                         "uinteger below 2³²)")
    return value


def set_state(generator: np.random.Generator, value, what: str) -> None:
    """Restore ``generator`` to the state ``state_array`` gave.

    Raises:
        ValueError: as ``check_state_array``, naming ``what``.
    """
    words = [int(w) for w in check_state_array(value, what)]
    try:
        generator.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": (words[0] << 64) | words[1], "inc": (words[2] << 64) | words[3]},
            "has_uint32": words[4],
            "uinteger": words[5],
        }
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{what} is not a valid PCG64 state ({exc})") from None
