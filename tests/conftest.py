"""Session set-up: the data folder as an absolute path before any test changes directory.

The README's command sets ``CHAINRULE_DATA=../shared/data``, relative to the clone's root where
pytest starts; tests run ``chainrule`` in temporary folders and notebooks in examples/, and all
of them must see the same folder. (Importing chainrule.data resolves it too; this makes the
order of imports irrelevant.)
"""

import os

_data = os.environ.get("CHAINRULE_DATA")
if _data:
    os.environ["CHAINRULE_DATA"] = os.path.abspath(os.path.expanduser(_data))
