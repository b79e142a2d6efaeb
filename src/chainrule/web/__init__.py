"""``chainrule serve``: draw a digit in the browser and watch a trained model classify it.

``create_app(model)`` builds the FastAPI app (``web/app.py``: the JSON API and the static
page in ``web/static/``); ``serve(model, host, port)`` runs it with uvicorn. The explanations
the page shows (saliency, hidden units or templates, nearest training digits) are plain NumPy
in ``web/explain.py``; the API's JSON shapes are in ``web/schemas.py``. FastAPI, uvicorn and
Pillow come with the ``web`` extra; they are imported only when ``create_app`` or ``serve`` is
first used.
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]

WEB_HINT = 'chainrule serve needs FastAPI, uvicorn and Pillow: pip install "chainrule[web]"'


def __getattr__(name: str):
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'chainrule.web' has no attribute {name!r}")
