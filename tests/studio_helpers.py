"""Shared helpers for the ``chainrule studio`` tests: an app, a client, waiting for a run."""

from __future__ import annotations

import time

from chainrule.web.studio import create_studio_app
from serve_helpers import local_client

SPIRALS = {"dataset": "spirals", "hidden": [16, 16], "activation": "tanh", "optimizer": "adam",
           "lr": 0.03, "batch_size": 32, "seed": 0}
TWO_BLOBS_CSV = "x1,x2,label\n" + "".join(
    f"{-1.5 + 0.1 * (i % 7)},{0.1 * (i % 5)},0\n{1.5 - 0.1 * (i % 7)},{0.1 * (i % 3)},1\n"
    for i in range(40))


def studio_client(tmp_path, **kwargs):
    """A TestClient (Host: localhost) on a fresh studio app writing run folders to tmp_path."""
    app = create_studio_app(runs_dir=tmp_path / "runs", **kwargs)
    return local_client(app)


def post(client, path: str, body=None):
    """POST with a JSON body ({} by default), as the page sends every action."""
    return client.post(path, json={} if body is None else body)


def wait_for(client, run_id: str, condition, timeout: float = 60.0) -> dict:
    """Poll GET /api/runs/{id} until ``condition(state)``; the last state (fails on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        state = client.get(f"/api/runs/{run_id}").json()
        if condition(state):
            return state
        assert time.monotonic() < deadline, f"timed out; last state {state['state']} " \
            f"step {state['step']} metrics {state['metrics']}"
        time.sleep(0.1)
