"""Data: IDX files, dataset lookup and download, toy datasets, CSV points, preprocessing, words for
language models.

Everything each submodule lists in its ``__all__`` is available here.
"""

from . import datasets, idx, points, preprocess, text, toy
from .datasets import *  # noqa: F403
from .idx import *  # noqa: F403
from .points import *  # noqa: F403
from .preprocess import *  # noqa: F403
from .text import *  # noqa: F403
from .toy import *  # noqa: F403

__all__ = [*datasets.__all__, *idx.__all__, *points.__all__, *preprocess.__all__,
           *text.__all__, *toy.__all__]
