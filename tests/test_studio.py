"""``chainrule studio``'s JSON API without a browser: every endpoint, and every bad request.

Runs train in the studio's worker threads on small 2-D sets (a few hundred points, well under
a second of training each) and one MNIST subset.
"""

import json
import threading
import time

import httpx
import numpy as np
import pytest

from chainrule.serialization import load_model
from chainrule.web import create_app, limits
from chainrule.web.studio import create_studio_app
from serve_helpers import (
    DATA_ROOT,
    local_client,
    one_blas_thread,  # noqa: F401 - an autouse fixture
    running_server,
)
from studio_helpers import SPIRALS, TWO_BLOBS_CSV, post, studio_client, wait_for


@pytest.fixture
def client(tmp_path):
    return studio_client(tmp_path)


def make(client, **settings) -> str:
    response = post(client, "/api/runs", {**SPIRALS, **settings})
    assert response.status_code == 201, response.text
    return response.json()["id"]


# ---------------------------------------------------------------------- the life of a run
def test_a_new_run_is_paused_at_step_zero_with_every_setting(client):
    run = make(client, hidden=[8, 8])
    state = client.get(f"/api/runs/{run}").json()
    assert state["state"] == "paused" and state["step"] == 0 and state["epoch"] == 0
    assert state["settings"] == {
        "dataset": "spirals", "classes": 3, "noise": 0.2, "samples": 400, "model": "mlp",
        "hidden": [8, 8], "activation": "tanh", "dropout": 0.0, "optimizer": "adam",
        "lr": 0.03, "batch_size": 32, "weight_decay": 0.0, "seed": 0, "epochs": 2000}
    data = state["data"]
    assert data["kind"] == "points" and data["classes"] == 3
    assert (data["train_samples"], data["val_samples"]) == (300, 100)
    assert len(data["points"]["x"]) == 300 and len(data["points"]["y_val"]) == 100
    assert state["steps_per_epoch"] == 10  # ⌈300 / 32⌉
    assert 0 < state["metrics"]["accuracy"] < 0.7  # untrained
    assert "dense_1 (Dense)" in state["model_summary"]


def test_step_is_exactly_one_batch_and_refused_while_running(client):
    run = make(client)
    for expected in (1, 2, 3):
        state = post(client, f"/api/runs/{run}/step").json()
        assert state["step"] == expected and state["state"] == "paused"
    assert post(client, f"/api/runs/{run}/start").json()["state"] == "running"
    refused = post(client, f"/api/runs/{run}/step")
    assert refused.status_code == 409
    assert "pause it first" in refused.json()["detail"]
    paused = post(client, f"/api/runs/{run}/pause").json()
    assert paused["state"] == "paused"
    time.sleep(0.3)
    assert client.get(f"/api/runs/{run}").json()["step"] == paused["step"]  # it stopped
    assert post(client, f"/api/runs/{run}/step").json()["step"] == paused["step"] + 1


def test_spirals_reach_95_percent_on_held_out_points(client):
    run = make(client, hidden=[8, 8])
    post(client, f"/api/runs/{run}/start")
    state = wait_for(client, run, lambda s: s["metrics"]["val_accuracy"] >= 0.95)
    post(client, f"/api/runs/{run}/pause")
    assert state["metrics"]["accuracy"] > 0.9
    assert state["curve"][-1]["val_accuracy"] >= 0.95


def test_the_curve_carries_each_weight_gradient_norm_of_the_last_step(client):
    """Each curve point holds ‖∂L/∂W‖ of the step before it, as the health table shows it
    and as the model's gradients hold it; before any step there is none."""
    run = make(client, hidden=[8, 8])
    assert client.get(f"/api/runs/{run}").json()["curve"][-1]["grad_norm"] == {}
    for _ in range(3):
        post(client, f"/api/runs/{run}/step")
    event = client.app.state.studio.get(run).event
    state = json.loads(event)
    norms = state["curve"][-1]["grad_norm"]
    assert sorted(norms) == ["dense_1.W", "dense_2.W", "dense_3.W"]
    assert norms == {layer["name"]: layer["grad_norm"] for layer in state["health"]["layers"]}
    model = client.app.state.studio.get(run).model
    first = next(layer for layer in model.layers if layer.name == "dense_1")
    expected = float(np.linalg.norm(first.W.grad))
    assert norms["dense_1.W"] == pytest.approx(expected, rel=1e-6) and expected > 0


def test_the_last_update_after_pause_says_paused(client, monkeypatch):
    """With an update after every batch, the worker parks on a step it has already published
    (as "running"); it publishes again, so a page's last update says "paused" (else its Step
    button stays disabled)."""
    from chainrule.web import studio_run

    monkeypatch.setattr(studio_run, "UPDATES_PER_S", 1e9)
    monkeypatch.setattr(studio_run, "VIEW_SHARE", 1.0)
    run = make(client, hidden=[8, 8])
    post(client, f"/api/runs/{run}/start")
    wait_for(client, run, lambda s: s["step"] > 20)
    paused = post(client, f"/api/runs/{run}/pause").json()
    worker = client.app.state.studio.get(run)
    deadline = time.monotonic() + 10
    while json.loads(worker.event)["state"] != "paused" and time.monotonic() < deadline:
        time.sleep(0.02)
    event = json.loads(worker.event)
    assert event["state"] == "paused" and event["step"] == paused["step"]


def test_learning_rate_and_weight_decay_change_mid_run(client):
    run = make(client)
    post(client, f"/api/runs/{run}/start")
    wait_for(client, run, lambda s: s["step"] > 20)
    state = client.patch(f"/api/runs/{run}", json={"lr": 0.005, "weight_decay": 1e-4}).json()
    assert state["lr"] == 0.005 and state["settings"]["lr"] == 0.005
    assert state["weight_decay"] == 1e-4 and state["state"] == "running"
    studio = client.app.state.studio
    optimizer = studio.get(run).model.optimizer
    assert optimizer.lr == 0.005 and optimizer.weight_decay == 1e-4
    step = state["step"]
    wait_for(client, run, lambda s: s["step"] > step + 5)
    assert optimizer.last_lr == 0.005  # the steps after the answer used the new rate
    post(client, f"/api/runs/{run}/pause")
    assert client.patch(f"/api/runs/{run}", json={"lr": 0.02}).json()["lr"] == 0.02
    assert post(client, f"/api/runs/{run}/step").status_code == 200
    assert optimizer.last_lr == 0.02


def test_reset_starts_over_from_the_same_weights(client):
    run = make(client)
    first = client.get(f"/api/runs/{run}").json()
    post(client, f"/api/runs/{run}/start")
    wait_for(client, run, lambda s: s["step"] > 50)
    studio = client.app.state.studio
    worker = studio.get(run).thread
    state = post(client, f"/api/runs/{run}/reset").json()
    assert not worker.is_alive()  # the worker is stopped and gone
    assert state["state"] == "paused" and state["step"] == 0 and state["curve"][-1]["step"] == 0
    assert state["metrics"] == first["metrics"]  # the seed's weights again


def test_a_run_that_finishes_is_done(client):
    run = make(client, epochs=2)
    post(client, f"/api/runs/{run}/start")
    state = wait_for(client, run, lambda s: s["state"] == "done")
    assert state["step"] == 20 and state["epoch"] == 2
    for action in ("start", "step"):
        refused = post(client, f"/api/runs/{run}/{action}")
        assert refused.status_code == 409 and "the run is done" in refused.json()["detail"]
    assert post(client, f"/api/runs/{run}/reset").json()["state"] == "paused"


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
def test_a_diverging_run_shows_the_error(client):
    run = make(client, optimizer="sgd", lr=10.0, hidden=[64, 64], activation="relu",
               dataset="blobs", noise=2.0)
    post(client, f"/api/runs/{run}/start")
    state = wait_for(client, run, lambda s: s["state"] in ("error", "done"))
    assert state["state"] == "error"
    assert state["error"].startswith("FloatingPointError: training diverged: the loss became")
    assert state["metrics"]["loss"] is None
    event = json.loads(client.app.state.studio.get(run).event)
    assert event["state"] == "error" and "regions" not in event
    refused = post(client, f"/api/runs/{run}/start")
    assert refused.status_code == 409 and "training diverged" in refused.json()["detail"]


def test_uploaded_csv_trains(client):
    response = post(client, "/api/runs", {"csv": TWO_BLOBS_CSV, "hidden": [4], "lr": 0.05})
    assert response.status_code == 201, response.text
    run = response.json()["id"]
    state = client.get(f"/api/runs/{run}").json()
    assert state["data"]["name"] == "csv" and state["data"]["classes"] == 2
    assert state["data"]["train_samples"] + state["data"]["val_samples"] == 80
    post(client, f"/api/runs/{run}/start")
    wait_for(client, run, lambda s: s["metrics"]["val_accuracy"] == 1.0)


@pytest.mark.parametrize("name", ["blobs", "xor", "circles", "moons"])
def test_every_toy_set_makes_a_run(client, name):
    run = make(client, dataset=name, samples=100)
    data = client.get(f"/api/runs/{run}").json()["data"]
    assert data["name"] == name and data["train_samples"] == 75


def test_events_stream_updates_several_times_a_second(tmp_path):
    app = create_studio_app(runs_dir=tmp_path)
    with running_server(app) as url, httpx.Client(base_url=url) as http:
        run = http.post("/api/runs", json={**SPIRALS, "epochs": 100000}).json()["id"]
        http.post(f"/api/runs/{run}/start", json={})
        events, start = [], time.monotonic()
        with http.stream("GET", f"/api/runs/{run}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                if len(events) >= 8 or time.monotonic() - start > 4:
                    break
        http.delete(f"/api/runs/{run}")
    # The rate itself is measured by benchmarks/studio.py; here: several updates, in order.
    assert len(events) >= 8, f"{len(events)} updates in 4 s"
    steps = [e["step"] for e in events]
    assert steps == sorted(steps) and steps[-1] > steps[0]
    last = events[-1]
    regions = last["regions"]
    side = regions["side"]
    assert len(np.frombuffer(__import__("base64").b64decode(regions["classes"]), np.uint8)) == \
        side * side
    assert {e["name"] for e in last["health"]["layers"]} == {"dense_1.W", "dense_2.W",
                                                             "dense_3.W"}
    ratios = [e["health"]["layers"][0]["update_ratio"] for e in events]
    assert any(r is not None and 0 < r < 1 for r in ratios)
    backward = next(e["backward"] for e in events if "backward" in e)
    titles = [s["title"] for s in backward["steps"]]
    assert titles[0].startswith("loss: SparseCategoricalCrossEntropy")
    assert titles[-1] == "Flatten 'flatten_1'" or titles[-1].startswith("Dense")
    dense = next(s for s in backward["steps"] if s["title"] == "Dense 'dense_3'")
    shapes = {f["name"]: f["shape"] for f in dense["factors"]}
    assert shapes["dL/dW₃"] == [16, 3] and shapes["dL/dz₃"] == [8, 3]


def test_a_run_whose_page_closed_is_stopped_and_freed(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "STUDIO_ORPHAN_S", 0.3)
    app = create_studio_app(runs_dir=tmp_path)
    studio = app.state.studio
    with running_server(app) as url, httpx.Client(base_url=url) as http:
        run_id = http.post("/api/runs", json=SPIRALS).json()["id"]
        http.post(f"/api/runs/{run_id}/start", json={})
        run = studio.get(run_id)
        with http.stream("GET", f"/api/runs/{run_id}/events") as stream:
            next(line for line in stream.iter_lines() if line.startswith("data: "))
        deadline = time.monotonic() + 10
        while run_id in studio.runs and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run_id not in studio.runs
        # The reaper forgets the run first and then waits for its worker's batch to end.
        run.thread.join(timeout=10)
        assert not run.thread.is_alive()
        assert http.get(f"/api/runs/{run_id}").status_code == 404


def test_delete_stops_the_worker(client):
    run = make(client)
    post(client, f"/api/runs/{run}/start")
    worker = client.app.state.studio.get(run).thread
    assert client.delete(f"/api/runs/{run}").status_code == 204
    assert not worker.is_alive()
    assert client.get(f"/api/runs/{run}").status_code == 404


def test_run_limit(tmp_path):
    client = studio_client(tmp_path, max_runs=2)
    first = make(client)
    make(client)
    refused = post(client, "/api/runs", SPIRALS)
    assert refused.status_code == 429 and "2 runs at most" in refused.json()["detail"]
    client.delete(f"/api/runs/{first}")
    assert post(client, "/api/runs", SPIRALS).status_code == 201


# ---------------------------------------------------------------------- saving
def test_save_model_and_run_folder(client, tmp_path):
    run = make(client)
    post(client, f"/api/runs/{run}/start")
    wait_for(client, run, lambda s: s["epoch"] >= 3)
    post(client, f"/api/runs/{run}/pause")
    response = client.get(f"/api/runs/{run}/model.npz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    path = tmp_path / "downloaded.npz"
    path.write_bytes(response.content)
    model = load_model(path)
    ours = client.app.state.studio.get(run).model
    x = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), ours.predict(x))

    saved = post(client, f"/api/runs/{run}/save").json()
    folder = tmp_path / "runs" / saved["folder"].rsplit("/", 1)[-1]
    assert folder.is_dir()
    assert saved["files"] == ["config.json", "history.csv", "history.json", "manifest.json",
                              "model.npz", "points.csv", "report.html"]
    history = json.loads((folder / "history.json").read_text())
    assert len(history["val_accuracy"]) >= 3
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["samples"] == {"train": 300, "validation": 100}
    assert "Decision regions" in (folder / "report.html").read_text()


def test_mnist_subset_shows_weights_and_gradients_and_saves_a_servable_model(tmp_path):
    client = studio_client(tmp_path, data_dir=DATA_ROOT / "mnist")
    response = post(client, "/api/runs", {"dataset": "mnist", "samples": 300, "hidden": [32]})
    assert response.status_code == 201, response.text
    run = response.json()["id"]
    state = client.get(f"/api/runs/{run}").json()
    assert state["data"]["kind"] == "images" and "points" not in state["data"]
    assert (state["data"]["train_samples"], state["data"]["val_samples"]) == (300, 100)
    studio = client.app.state.studio
    before = json.loads(studio.get(run).event)["first_layer"]
    post(client, f"/api/runs/{run}/step")
    after = json.loads(studio.get(run).event)
    layer = after["first_layer"]
    assert layer["kind"] == "unit" and layer["weights"]["n"] == 24
    assert (layer["weights"]["h"], layer["weights"]["w"]) == (28, 28)
    assert layer["weights"]["data"] != before["weights"]["data"]
    assert before["gradients"]["max_abs"] == 0.0 < layer["gradients"]["max_abs"]
    assert len(after["confusion"]) == 10 and sum(map(sum, after["confusion"])) == 100
    assert after["mistakes"]["n"] == 8
    assert after["health"]["relu"][0]["units"] == 32
    path = tmp_path / "m.npz"
    path.write_bytes(client.get(f"/api/runs/{run}/model.npz").content)
    serve = local_client(create_app(path, neighbours=False))
    answer = serve.post("/api/predict", json={"pixels": [0.0] * 784})
    assert answer.status_code == 200 and len(answer.json()["probabilities"]) == 10


# ---------------------------------------------------------------------- bad requests
UNKNOWN = "0123456789abcdef"


@pytest.mark.parametrize("method, path", [
    ("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/start"), ("POST", "/pause"),
    ("POST", "/step"), ("POST", "/reset"), ("GET", "/events"), ("GET", "/model.npz"),
    ("POST", "/save")])
def test_unknown_run_id(client, method, path):
    body = {"lr": 0.1} if method == "PATCH" else {} if method == "POST" else None
    response = client.request(method, f"/api/runs/{UNKNOWN}{path}", json=body)
    assert response.status_code == 404
    assert response.json()["detail"].startswith(f"no run '{UNKNOWN}'")


@pytest.mark.parametrize("body, status, message", [
    ({"dataset": "cifar"}, 422, "dataset: Input should be 'blobs', 'xor', 'circles'"),
    ({"lr": -0.1}, 422, "lr: Input should be greater than 0"),
    ({"lr": 0}, 422, "lr: Input should be greater than 0"),
    ({"batch_size": 0}, 422, "batch_size: Input should be greater than or equal to 1"),
    ({"hidden": [8, 0]}, 422, "hidden: every layer needs 1 … 256 units, got [8, 0]"),
    ({"activation": "swish"}, 422, "activation: Input should be 'relu', 'tanh'"),
    ({"dataset": "xor", "classes": 3}, 422, "xor has 2 classes, got classes=3"),
    ({"classes": 9}, 422, "classes: Input should be less than or equal to 5"),
    ({"dataset": "spirals", "csv": "1,2,0\n"}, 422, "send either dataset or csv, not both"),
    ({"model": "cnn"}, 422, "model 'cnn' is an image preset"),
    ({"samples": 100000}, 422, "samples must be at most 5,000 for a toy set"),
    ({"samples": 30, "classes": 5}, 422, "30 points are too few for 5 classes"),
    ({"optimizer": "lbfgs"}, 422, "optimizer: Input should be 'adam'"),
    ({"colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ({"csv": "x1,x2,label\n1,2,0\n3,4\n"}, 422,
     "csv: line 3: expected 3 comma-separated values x1,x2,label, got 2: '3,4'"),
    ({"csv": "x1,x2,label\n1,2,0\n3,four,1\n"}, 422,
     "csv: line 3: x2 must be a finite number, got 'four'"),
    ({"csv": "1,2,0\n1,2,1\n"}, 422, "the CSV holds 2 rows; at least 4 are needed"),
    ({"csv": "1,2,0\n", "noise": 0.1}, 422, "a CSV file brings its own points"),
])
def test_bad_settings(client, body, status, message):
    response = post(client, "/api/runs", body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert not client.app.state.studio.runs  # nothing half-made


def test_csv_row_and_size_limits(client):
    many = "".join(f"{i},{i},{i % 2}\n" for i in range(limits.STUDIO_CSV_ROWS + 1))
    response = post(client, "/api/runs", {"csv": many})
    assert response.status_code == 422
    assert f"more than {limits.STUDIO_CSV_ROWS:,} data rows" in response.json()["detail"]
    huge = "0.123456789,0.123456789,1\n" * 50_000
    response = post(client, "/api/runs", {"csv": huge})
    assert response.status_code == 413 and "send a smaller CSV" in response.json()["detail"]


def test_bad_changes(client):
    run = make(client)
    for body, message in (({"lr": -1}, "lr: Input should be greater than 0"),
                          ({"weight_decay": -0.1}, "weight_decay: Input should be greater"),
                          ({"hidden": [4]}, "hidden: Extra inputs are not permitted")):
        response = client.patch(f"/api/runs/{run}", json=body)
        assert response.status_code == 422 and message in response.json()["detail"]
    assert client.get(f"/api/runs/{run}").json()["lr"] == 0.03


def test_unavailable_image_set(tmp_path):
    client = studio_client(tmp_path, data_dir=tmp_path)
    response = post(client, "/api/runs", {"dataset": "fashion-mnist"})
    assert response.status_code == 422
    assert "fashion-mnist was not found on the server" in response.json()["detail"]
    assert str(tmp_path) not in response.json()["detail"]  # no paths to clients


def test_not_json_and_wrong_host(client):
    response = client.post("/api/runs", content=b"dataset=spirals",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    response = client.post("/api/runs", content=b"{", headers={"Content-Type":
                                                                "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]
    response = client.get("/api/runs/x", headers={"Host": "evil.example"})
    assert response.status_code == 400 and "chainrule studio" in response.json()["detail"]


def test_concurrent_requests_keep_the_server_up(client):
    run = make(client)
    post(client, f"/api/runs/{run}/start")
    errors = []

    def hammer():
        for _ in range(20):
            for path in ("/pause", "/start"):
                status = post(client, f"/api/runs/{run}{path}").status_code
                if status != 200:
                    errors.append(status)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert client.get("/healthz").json() == {"status": "ok"}


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == {
        "/healthz", "/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/start",
        "/api/runs/{run_id}/pause", "/api/runs/{run_id}/step", "/api/runs/{run_id}/reset",
        "/api/runs/{run_id}/events", "/api/runs/{run_id}/model.npz",
        "/api/runs/{run_id}/save"}
    assert set(paths["/api/runs/{run_id}"]) == {"get", "patch", "delete"}
    assert "text/event-stream" in paths["/api/runs/{run_id}/events"]["get"]["responses"]["200"][
        "content"]


def test_the_page_is_served_with_its_scripts(client):
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in \
        page.headers["content-security-policy"]
    assert '<script src="/static/studio.js"' in page.text
    assert client.get("/static/studio.js").status_code == 200


# ---------------------------------------------------------------------- pieces
def test_update_ratio_and_dead_units_by_hand():
    from chainrule import layers
    from chainrule.model import Sequential
    from chainrule.web import studio_views as views

    model = Sequential([layers.Dense(3, input_shape=(2,), activation="relu"), layers.Dense(2)],
                       seed=0)
    W = model.layers[0].W
    before = {"dense_1.W": W.value.copy(), "dense_2.W": model.layers[2].W.value.copy()}
    W.value[0, 0] += 0.5
    W.value[:, 2] = -1.0  # unit 3 is dead for inputs ≥ 0
    x = np.abs(np.random.default_rng(0).standard_normal((50, 2))).astype(np.float32)
    _, relus = views.layer_outputs(model, x)
    health = views.health(model, before, relus)
    first = health["layers"][0]
    expected = np.linalg.norm(W.value - before["dense_1.W"]) / np.linalg.norm(W.value)
    assert first["update_ratio"] == pytest.approx(expected, rel=1e-6)
    assert health["layers"][1]["update_ratio"] == 0.0 and first["grad_norm"] is None
    assert health["relu"][0]["units"] == 3
    assert health["relu"][0]["dead_fraction"] == pytest.approx(1 / 3)


def test_the_command_line_starts_the_studio(tmp_path):
    import subprocess
    import sys
    import urllib.request

    from serve_helpers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "chainrule", "studio", "--port", str(port),
                             "--runs-dir", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
                    assert b"chainrule studio" in page.read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    assert f"chainrule studio: open http://127.0.0.1:{port}/" in output
