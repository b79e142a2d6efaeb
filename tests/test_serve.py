"""``chainrule serve``: the JSON API through FastAPI's TestClient, the explanations, the CLI.

One small MLP trained on real MNIST (serve_helpers.trained_run) serves every endpoint; a
softmax regression and a float64 model with BatchNorm and Dropout check the explanations.
"""

import asyncio
import base64
import contextlib
import functools
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chainrule import Sequential, cli, functional, layers, load_model, losses, models
from chainrule.data import dataset_files, preprocess_digit
from chainrule.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from chainrule.web import create_app
from chainrule.web.explain import Explainer
from chainrule.web.limits import INLINE_PIXELS
from chainrule.web.neighbours import Neighbours
from chainrule.web.pictures import Readers, WorkerLost
from serve_helpers import (
    DATA_ROOT,
    data_url,
    drawn_one,
    free_port,
    local_client,
    mnist,
    mnist_png,
    neighbour_set,
    one_blas_thread,  # noqa: F401 - an autouse fixture
    png_bytes,
    serve_process,
    trained_run,
)

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def run():
    return trained_run()


@pytest.fixture(scope="module")
def model(run):
    return load_model(run / "model.npz")


@pytest.fixture(scope="module")
def client(run):
    app = create_app(run / "model.npz", neighbours=neighbour_set())
    with local_client(app) as c:
        yield c


def logits_of(model, x):
    return model.predict(np.asarray(x, np.float32).reshape(1, 28, 28))[0]


def post(client, body, **kwargs):
    return client.post("/api/predict", json=body, **kwargs)


# ---------------------------------------------------------------------- service endpoints
def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_model_info_describes_the_model_and_its_run(client, model, run):
    r = client.get("/api/model")
    assert r.status_code == 200
    info = r.json()
    manifest = json.loads((run / "manifest.json").read_text())
    assert info["name"] == "mlp" and info["dtype"] == "float32"
    assert info["parameters"] == model.count_params() == 784 * 64 + 64 + 64 * 10 + 10
    assert [layer["type"] for layer in info["layers"]] == [
        "Flatten", "Dense", "ReLU", "Dropout", "Dense"]
    assert info["layers"][1]["output_shape"] == [64]
    assert info["input_shape"] == [28, 28] and info["classes"] == 10
    assert info["test_accuracy"] == manifest["final"]["test_accuracy"] > 0.8
    assert info["units"] == "hidden"
    assert info["neighbours"] == {"available": True, "count": 5000, "dataset": "given",
                                  "sha256": None, "reason": None}
    assert info["training_data"] is None, "this manifest names no data"
    assert "Total params: 50,890" in info["summary"]


def test_model_info_without_manifest_has_no_accuracy(model):
    with local_client(create_app(model, neighbours=False)) as c:
        info = c.get("/api/model").json()
    assert info["test_accuracy"] is None
    assert info["neighbours"]["available"] is False


def test_the_page_and_its_files_are_served_with_nothing_external(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    html = page.text
    for needed in ('id="pad"', 'id="clear"', 'id="bars"', 'id="input28"', 'id="saliency"',
                   'id="units"', 'id="neighbours"', 'name="viewport"'):
        assert needed in html
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name
        body = r.text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert "http://" not in body and "https://" not in body, f"{name} refers to another host"
        assert "@import" not in body and "@font-face" not in body
    assert "https://" not in html and "http://" not in html


def test_openapi_schema_lists_the_endpoints(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/model", "/healthz"} <= set(schema["paths"])
    responses = schema["paths"]["/api/predict"]["post"]["responses"]
    assert {"200", "413", "415", "422"} <= set(responses)
    props = schema["components"]["schemas"]["PredictResponse"]["properties"]
    assert {"class", "probabilities", "input", "saliency", "units", "neighbours"} <= set(props)


# ---------------------------------------------------------------------- predict
def test_predict_pixels_flat_and_as_rows(client, model):
    (_, _), (x_test, y_test) = mnist()
    x = x_test[0]
    flat = post(client, {"pixels": x.ravel().tolist()})
    rows = post(client, {"pixels": x.tolist()})
    assert flat.status_code == rows.status_code == 200
    assert flat.json() == rows.json()
    body = flat.json()
    assert set(body) == {"class", "probabilities", "input", "empty", "saliency", "units",
                         "neighbours", "notes"}
    expected = functional.softmax(logits_of(model, x))
    np.testing.assert_array_equal(np.array(body["probabilities"], np.float32), expected)
    assert body["class"] == int(np.argmax(expected)) == y_test[0]
    assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(np.array(body["input"], np.float32), x)
    assert body["empty"] is False
    assert body["saliency"] is None and body["units"] is None and body["neighbours"] is None


def test_predict_image_agrees_with_chainrule_predict(client, run, tmp_path, capsys):
    (_, _), (x_test, _) = mnist()
    pngs = [tmp_path / f"digit{i}.png" for i in range(3)]
    for i, path in enumerate(pngs[:2]):
        path.write_bytes(mnist_png(x_test[i + 1]))
    pngs[2].write_bytes(drawn_one())
    assert cli.main(["predict", str(run / "model.npz"), *map(str, pngs), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for path, expected in zip(pngs, printed, strict=True):
        body = post(client, {"image": data_url(path.read_bytes())}).json()
        assert body["class"] == expected["class"]
        assert body["probabilities"] == expected["probabilities"], path.name
        np.testing.assert_array_equal(np.array(body["input"], np.float32),
                                      preprocess_digit(path))
    assert printed[2]["class"] == 1, "a vertical stroke should read as a 1"


def test_plain_base64_and_data_urls_give_the_same_answer(client):
    png = drawn_one()
    plain = base64.b64encode(png).decode()
    as_url = post(client, {"image": data_url(png)}).json()
    assert post(client, {"image": plain}).json() == as_url
    wrapped = "\n".join(plain[i:i + 76] for i in range(0, len(plain), 76))
    assert post(client, {"image": wrapped}).json() == as_url


def test_any_size_and_mode_of_picture_works(client):
    (_, _), (x_test, y_test) = mnist()
    gray = Image.open(io.BytesIO(mnist_png(x_test[3], size=600)))
    for picture in (gray, gray.convert("RGBA"), gray.convert("P"), gray.resize((31, 57))):
        r = post(client, {"image": data_url(png_bytes(picture))})
        assert r.status_code == 200, r.text
    jpeg = io.BytesIO()
    gray.convert("RGB").save(jpeg, format="JPEG", quality=90)
    r = post(client, {"image": "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue())
                      .decode()})
    assert r.status_code == 200 and r.json()["class"] == y_test[3]


def test_a_large_photo_is_decoded_off_the_event_loop_and_agrees_with_the_cli(client, run,
                                                                         tmp_path, capsys):
    (_, _), (x_test, y_test) = mnist()
    rng = np.random.default_rng(0)
    paper = Image.open(io.BytesIO(mnist_png(x_test[4], size=1200))).convert("RGB")
    noisy = np.clip(np.asarray(paper, np.float32) + rng.normal(0, 6, (1200, 1200, 3)), 0, 255)
    path = tmp_path / "photo.jpg"
    Image.fromarray(noisy.astype(np.uint8)).save(path, quality=85)
    encoded = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()
    assert len(encoded) < 1_000_000, "under the body limit"
    assert 1200 * 1200 > INLINE_PIXELS, "large enough for a worker thread"
    body = post(client, {"image": encoded}).json()
    assert cli.main(["predict", str(run / "model.npz"), str(path), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)[0]
    assert body["class"] == expected["class"] == y_test[4]
    assert body["probabilities"] == expected["probabilities"]


def test_pictures_read_in_worker_processes_give_the_same_answers(client, model):
    (_, _), (x_test, _) = mnist()
    pictures = [drawn_one(), mnist_png(x_test[11]), png_bytes(Image.new("L", (3000, 2000)))]
    app = create_app(model, neighbours=neighbour_set(), processes=2)
    with local_client(app) as c:
        assert len(app.state.readers._pool._processes) == 2
        for png in pictures:
            body = {"image": data_url(png), "explain": ["saliency", "units", "neighbours"]}
            assert post(c, body).json() == post(client, body).json()
        r = post(c, {"image": data_url(png_bytes(Image.new("L", (5000, 5000))))})
        assert r.status_code == 422 and "too large" in r.json()["detail"]
        r = post(c, {"image": data_url(drawn_one()[:300])})
        assert r.status_code == 422 and "corrupt or truncated" in r.json()["detail"]
    assert app.state.readers._pool is None, "the workers stop with the app"


def test_a_dead_picture_worker_is_replaced(model):
    app = create_app(model, neighbours=False, processes=1)
    with local_client(app) as c:
        good = {"image": data_url(drawn_one())}
        assert post(c, good).status_code == 200
        for worker in list(app.state.readers._pool._processes.values()):
            worker.kill()
            worker.join()
        r = post(c, good)
        if r.status_code == 503:  # the pool noticed with this request; the next one is new
            assert "died" in r.json()["detail"]
            r = post(c, good)
        assert r.status_code == 200 and r.json()["class"] == 1


def test_when_no_picture_worker_can_be_restarted_reads_fail_instead_of_waiting(monkeypatch):
    raw = drawn_one()
    readers = Readers(1)
    readers.start()
    pool = readers._pool

    def cannot_start():
        raise OSError("fork: Resource temporarily unavailable")

    monkeypatch.setattr(pool, "_started", cannot_start)

    async def scenario():
        await readers.read(raw)
        for worker in list(pool._processes.values()):
            worker.kill()
            worker.join()
        failures = []
        for _ in range(3):  # a read that waited for a worker would time out here instead
            with pytest.raises(WorkerLost) as caught:
                await asyncio.wait_for(readers.read(raw), timeout=30)
            failures.append(str(caught.value))
        return failures

    try:
        failures = asyncio.run(scenario())
    finally:
        readers.close()
    assert "died" in failures[0] or "no picture worker is running" in failures[0]
    assert all("no picture worker is running" in f for f in failures[1:]), failures


def test_a_blank_drawing_is_empty(client):
    blank = png_bytes(Image.new("RGB", (280, 280), "white"))
    body = post(client, {"image": data_url(blank), "explain": ["saliency"]}).json()
    assert body["empty"] is True
    assert not np.any(body["input"])
    assert len(body["probabilities"]) == 10


# ---------------------------------------------------------------------- explanations
def test_units_of_an_mlp_are_its_most_active_hidden_units(client, model):
    (_, _), (x_test, _) = mnist()
    x = x_test[5]
    body = post(client, {"pixels": x.tolist(), "explain": ["units"]}).json()
    units = body["units"]
    dense = model.layers[1]
    hidden = np.maximum(x.reshape(1, 784) @ dense.W.value + dense.b.value, 0)[0]
    top = np.argsort(-hidden, kind="stable")[:8]
    assert units["kind"] == "hidden" and units["layer"] == dense.name
    assert [u["unit"] for u in units["units"]] == top.tolist()
    np.testing.assert_allclose([u["activation"] for u in units["units"]], hidden[top],
                               rtol=1e-6)
    assert all(set(u) == {"unit", "activation"} for u in units["units"]), "no weights"


def test_unit_images_are_every_column_of_the_first_dense_sent_once(client, model):
    dense = model.layers[1]
    r = client.get("/api/model/units")
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.headers["cache-control"] == "no-cache"
    weights = r.json()
    assert weights["kind"] == "hidden" and weights["layer"] == dense.name
    assert [u["unit"] for u in weights["units"]] == list(range(64))
    for u in weights["units"]:
        w = dense.W.value[:, u["unit"]].reshape(28, 28)
        np.testing.assert_allclose(u["weights"], w, atol=np.abs(w).max() * 1e-3)
    # Unchanged from when each answer carried its units' images: 4 significant digits.
    from chainrule.web.app import _display
    assert weights["units"][5]["weights"] == _display(dense.W.value[:, 5].reshape(28, 28))
    # Cached by the browser: the same ETag gets a 304 and no body.
    again = client.get("/api/model/units", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    plain = client.get("/api/model/units", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == weights
    assert int(r.headers["content-length"]) < len(plain.content) / 2


def test_templates_of_a_softmax_regression_and_their_saliency():
    (x, y), (x_test, _) = mnist()
    model = models.softmax_regression(seed=0)
    model.fit(x[:3000], y[:3000], epochs=2, batch_size=100, seed=0, verbose=0)
    with local_client(create_app(model, neighbours=False)) as c:
        assert c.get("/api/model").json()["units"] == "templates"
        body = post(c, {"pixels": x_test[0].tolist(),
                        "explain": ["units", "saliency", "neighbours"]}).json()
        templates = c.get("/api/model/units").json()
    W = model.layers[1].W.value
    units = body["units"]
    assert units["kind"] == "templates" and [u["unit"] for u in units["units"]] == list(range(10))
    np.testing.assert_allclose([u["activation"] for u in units["units"]],
                               logits_of(model, x_test[0]), rtol=1e-6)
    assert templates["kind"] == "templates"
    assert [u["unit"] for u in templates["units"]] == list(range(10))
    for u in templates["units"]:
        np.testing.assert_allclose(u["weights"], W[:, u["unit"]].reshape(28, 28),
                                   atol=np.abs(W[:, u["unit"]]).max() * 1e-3)
    # z_c = x · W[:, c] + b_c, so ∂z_c/∂x is exactly the template of the predicted class.
    template = W[:, body["class"]].reshape(28, 28)
    np.testing.assert_allclose(body["saliency"], template, atol=np.abs(template).max() * 1e-3)
    assert body["neighbours"] is None
    assert body["notes"] == ["neighbours: nearest neighbours are turned off"]


def test_a_model_without_dense_units_has_no_unit_images():
    model = Sequential([layers.Conv2D(2, 5, input_shape=(1, 28, 28)), layers.ReLU(),
                        layers.Flatten(), layers.Dense(10)], seed=0)
    with local_client(create_app(model, neighbours=False)) as c:
        r = c.get("/api/model/units")
        body = post(c, {"pixels": [0.0] * 784, "explain": ["units"]}).json()
    assert r.status_code == 404 and "no Dense layer" in r.json()["detail"]
    assert body["units"] is None and body["notes"][0].startswith("units: the model has no")


def regularised_model() -> Sequential:
    """A float64 model with every layer whose training mode differs: BatchNorm and Dropout,
    on a conv path and a dense path, with non-trivial running statistics and γ, β."""
    rng = np.random.default_rng(3)
    model = Sequential([
        layers.Conv2D(3, 5, input_shape=(1, 28, 28)), layers.BatchNorm(), layers.Tanh(),
        layers.AvgPool2D(4), layers.Flatten(),
        layers.Dense(16), layers.BatchNorm(), layers.Tanh(), layers.Dropout(0.5),
        layers.Dense(10), layers.Softmax(),
    ], dtype="float64", seed=0)
    model.compile("adam", losses.SparseCategoricalCrossEntropy())
    (x, y), _ = mnist()
    model.fit(x[:256].reshape(-1, 1, 28, 28), y[:256], epochs=1, batch_size=32, seed=0,
              verbose=0)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNorm):
            layer.gamma.value[...] = rng.uniform(0.5, 2.0, layer.gamma.value.shape)
            layer.beta.value[...] = rng.normal(0, 0.5, layer.beta.value.shape)
    return model


def test_a_shifted_mlp_shows_the_hidden_units_and_saliency_of_its_unshifted_twin():
    """The mlp preset's RandomShift is the identity at inference: the page reads the same
    hidden units and the same saliency as from the network without it."""
    shifted = models.mlp(hidden=(64,), seed=0)
    plain = models.mlp(hidden=(64,), augment=0, seed=0)
    assert type(shifted.layers[0]).__name__ == "RandomShift"
    plain.set_weights(shifted.get_weights())
    (_, _), (x_test, _) = mnist()
    ours, theirs = Explainer(shifted), Explainer(plain)
    assert ours.unit_kind == theirs.unit_kind == "hidden"
    a, b = ours.predict(x_test[3]), theirs.predict(x_test[3])
    np.testing.assert_array_equal(a["units_output"], b["units_output"])
    np.testing.assert_array_equal(ours.saliency(x_test[3], a["class"]),
                                  theirs.saliency(x_test[3], a["class"]))


def test_saliency_is_the_gradient_of_the_inference_logit_with_batchnorm_and_dropout():
    model = regularised_model()
    explainer = Explainer(model)
    (_, _), (x_test, _) = mnist()
    x = x_test[7].astype(np.float64)
    before = [w.copy() for w in model.get_weights()]
    dropout_state = model.layers[8].rng.bit_generator.state
    probs_before = model.predict(x.reshape(1, 1, 28, 28))

    result = explainer.predict(x)
    c = result["class"]
    saliency = explainer.saliency(x, c)

    # Central differences of the inference logit z_c(x) = log p_c(x) + const: the model ends in
    # Softmax, so z_c − z_k = log p_c − log p_k; the Softmax layer is left out for saliency,
    # hence compare with the logits of the same network without its last layer.
    body = Sequential.from_config({**model.get_config(),
                                   "layers": model.get_config()["layers"][:-1]})
    body.set_weights(model.get_weights())
    h = 1e-5
    eye = np.eye(784).reshape(784, 1, 28, 28)
    z_plus = body.predict(x.reshape(1, 1, 28, 28) + h * eye, batch_size=784)[:, c]
    z_minus = body.predict(x.reshape(1, 1, 28, 28) - h * eye, batch_size=784)[:, c]
    numeric = ((z_plus - z_minus) / (2 * h)).reshape(28, 28)
    error = np.abs(saliency - numeric).max() / np.abs(numeric).max()
    assert error < 1e-6, f"relative error {error:.2e}"

    # Explaining changes nothing in the served model.
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert model.layers[8].rng.bit_generator.state == dropout_state
    np.testing.assert_array_equal(model.predict(x.reshape(1, 1, 28, 28)), probs_before)

    # The naive way, the served model in training mode, is another function (batch statistics
    # of one image, a random Dropout mask); for the dense BatchNorm it is not even defined.
    with pytest.raises(ValueError, match="more than one value per channel"):
        model.forward(x.reshape(1, 1, 28, 28), training=True)


def test_saliency_of_the_mlp_matches_finite_differences(client, model):
    (_, _), (x_test, _) = mnist()
    x = x_test[9]
    body = post(client, {"pixels": x.tolist(), "explain": ["saliency"]}).json()
    c = body["class"]
    W1, b1 = model.layers[1].W.value, model.layers[1].b.value
    W2 = model.layers[4].W.value
    active = (x.reshape(784) @ W1 + b1) > 0
    # z_c = W2[:, c] · relu(W1ᵀx + b1) + b2_c  ⇒  ∂z_c/∂x = W1 (W2[:, c] ⊙ [W1ᵀx + b1 > 0])
    expected = (W1.astype(np.float64) @ (W2[:, c] * active)).reshape(28, 28)
    np.testing.assert_allclose(body["saliency"], expected, atol=np.abs(expected).max() * 1e-3)


def test_neighbours_are_the_nearest_training_images(client):
    x, y = neighbour_set()
    query = x[42]
    body = post(client, {"pixels": query.tolist(), "explain": ["neighbours"]}).json()
    found = body["neighbours"]
    distances = np.linalg.norm(x.reshape(len(x), -1).astype(np.float64) - query.reshape(-1),
                               axis=1)
    order = np.argsort(distances, kind="stable")[:5]
    assert [n["index"] for n in found] == order.tolist()
    assert found[0]["index"] == 42 and found[0]["distance"] == pytest.approx(0, abs=1e-6)
    assert [n["label"] for n in found] == y[order].tolist()
    np.testing.assert_allclose([n["distance"] for n in found], distances[order], rtol=1e-9)
    np.testing.assert_allclose(found[1]["image"], x[order[1]], atol=1e-3)


@functools.cache
def mnist_bytes():
    """The 60,000 MNIST training images as uint8 (60000, 28, 28), as serve reads them, and
    their labels."""
    files = dataset_files("mnist", DATA_ROOT, download=False)
    return (read_idx(files["train_images"], expect=IMAGES_MAGIC),
            read_idx(files["train_labels"], expect=LABELS_MAGIC))


def brute_force(images: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    """The k nearest of ``images`` (N, 784 float32) to each query by float64 distances over
    all N, ties by the lower index: a float64 matrix product ranks every image, then every
    image within 1e-6 of the k-th squared distance is measured directly, ‖t − x‖."""
    t = images.astype(np.float64)
    q = queries.reshape(len(queries), -1).astype(np.float64)
    squared = (t * t).sum(1) - 2.0 * (q @ t.T) + (q * q).sum(1)[:, None]  # (Q, N)
    answers = []
    for row, x in zip(squared, q, strict=True):
        near = np.flatnonzero(row <= np.partition(row, k - 1)[k - 1] + 1e-6)
        exact = np.linalg.norm(t[near] - x, axis=1)
        answers.append(near[np.lexsort((near, exact))[:k]].tolist())
    return answers


def test_neighbours_are_exactly_the_nearest_of_the_60000_mnist_digits():
    images, labels = mnist_bytes()
    index = Neighbours(images, labels)
    train = images.reshape(60000, 784).astype(np.float32) / np.float32(255.0)
    (_, _), (x_test, _) = mnist()
    rng = np.random.default_rng(0)
    queries = np.concatenate([
        x_test[:150].reshape(-1, 784),                        # digits the model never saw
        train[[0, 1234, 59999]],                              # training digits: distance 0
        np.clip(train[[7, 77]] + rng.normal(0, 0.2, (2, 784)), 0, 1),   # noisy copies
        0.5 * x_test[150:152].reshape(-1, 784),               # faint digits
        np.zeros((1, 784)), np.ones((1, 784)),                # blank, all ink
        rng.random((2, 784)),                                 # noise
        preprocess_digit(Image.open(io.BytesIO(drawn_one()))).reshape(1, 784),  # the page
    ]).astype(np.float32)
    expected = brute_force(train, queries, 5)
    for x, want in zip(queries, expected, strict=True):
        found = index.query(x, 5)
        assert [n["index"] for n in found] == want
        exact = np.linalg.norm(train[want].astype(np.float64) - x.astype(np.float64), axis=1)
        assert [n["distance"] for n in found] == exact.tolist()
        assert [n["label"] for n in found] == labels[want].tolist()
        np.testing.assert_array_equal(found[0]["image"].reshape(784), train[want[0]])
    # Every bound is below the distance it bounds, for every training digit.
    t = train.astype(np.float64)
    for x in queries[::20]:
        squared = ((t - x.astype(np.float64)) ** 2).sum(1)
        assert np.all(index.bounds(x).astype(np.float64) <= squared), "a bound is too high"


def test_neighbour_ties_go_to_the_lower_index():
    """MNIST holds no two identical training digits: the ties here come from copies."""
    images, labels = mnist_bytes()
    part, part_labels = images[:20000], labels[:20000]
    train = part.reshape(-1, 784).astype(np.float32) / np.float32(255.0)
    (_, _), (x_test, _) = mnist()
    x = x_test[3]
    i1, i2, i3, i4, i5 = brute_force(train, x[None], 5)[0]
    # Copies after the originals: of i1 (a tie at the top) and of i5 (a tie at the 5th place).
    after = Neighbours(np.concatenate([part, part[[i1, i5]]]),
                       np.concatenate([part_labels, part_labels[[i1, i5]]]))
    n = len(part)
    assert [f["index"] for f in after.query(x, 5)] == [i1, n, i2, i3, i4]
    assert [f["index"] for f in after.query(x, 7)] == [i1, n, i2, i3, i4, i5, n + 1]
    # A copy of the 5th before everything: it wins the tie and the original drops out.
    before = Neighbours(np.concatenate([part[[i5]], part]),
                        np.concatenate([part_labels[[i5]], part_labels]))
    found = before.query(x, 5)
    assert [f["index"] for f in found] == [i1 + 1, i2 + 1, i3 + 1, i4 + 1, 0]
    assert found[3]["distance"] < found[4]["distance"]
    assert before.query(x, 6)[5]["index"] == i5 + 1
    assert before.query(x, 6)[5]["distance"] == found[4]["distance"]


def test_neighbours_norm_trick_ranks_like_brute_force():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    index = Neighbours(images, rng.integers(0, 10, 300))
    for _ in range(5):
        q = rng.random((28, 28), dtype=np.float32)
        exact = np.linalg.norm(images.reshape(300, -1) / 255.0 - q.reshape(-1), axis=1)
        assert [n["index"] for n in index.query(q, 5)] == np.argsort(exact)[:5].tolist()


def test_concurrent_neighbour_queries_are_batched_and_exact():
    x, y = neighbour_set(3000)
    index = Neighbours(x, y)
    queries = x[:40] * 0.9 + 0.05
    alone = [index.query(q) for q in queries]
    with ThreadPoolExecutor(max_workers=20) as pool:
        together = list(pool.map(index.query, queries))
        # Six queries waiting while a product runs are answered by one matrix product.
        index._product.acquire()
        futures = [pool.submit(index.query, q) for q in queries[:6]]
        deadline = time.monotonic() + 10
        while len(index._waiting) < 6 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(index._waiting) == 6
        index._product.release()
        together += [f.result() for f in futures]
    for a, b in zip(alone + alone[:6], together, strict=True):
        assert [n["index"] for n in a] == [n["index"] for n in b]
        np.testing.assert_allclose([n["distance"] for n in a], [n["distance"] for n in b],
                                   rtol=1e-12)


def test_neighbours_from_the_mnist_training_set(run):
    app = create_app(run / "model.npz", data_dir=DATA_ROOT)
    with local_client(app) as c:
        info = c.get("/api/model").json()["neighbours"]
        assert info["available"] and info["count"] == 60000 and info["dataset"] == "mnist"
        images = dataset_files("mnist", DATA_ROOT, download=False)["train_images"]
        assert info["sha256"] == hashlib.sha256(images.read_bytes()).hexdigest()
        (x, _), _ = mnist()
        found = post(c, {"pixels": x[59999].tolist(), "explain": ["neighbours"]}).json()
    assert found["neighbours"][0]["index"] == 59999


def test_without_mnist_the_app_works_and_says_why(run, tmp_path):
    app = create_app(run / "model.npz", data_dir=tmp_path)
    with local_client(app) as c:
        info = c.get("/api/model").json()["neighbours"]
        r = post(c, {"image": data_url(drawn_one()),
                     "explain": ["saliency", "units", "neighbours"]})
    assert info["available"] is False and "not found" in info["reason"]
    assert r.status_code == 200
    body = r.json()
    assert body["neighbours"] is None and body["saliency"] is not None
    assert len(body["notes"]) == 1 and body["notes"][0].startswith("neighbours: the MNIST")


# ---------------------------------------------------------------------- bad requests
def chunked(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i:i + size]


GOOD_PNG = drawn_one()
HUGE_PNG = png_bytes(Image.new("1", (5000, 5000), 1))

BAD_JSON_BODIES = [
    ({"image": "not base64 at all!"}, "not valid base64"),
    ({"image": base64.b64encode(b"hello, world").decode()}, "not a picture"),
    ({"image": data_url(GOOD_PNG[: len(GOOD_PNG) // 2])}, "corrupt or truncated"),
    ({"image": "data:image/png,rawbytes"}, "base64-encoded"),
    ({"image": ""}, "empty"),
    ({"image": data_url(HUGE_PNG)}, "too large"),
    ({"image": 12}, "image"),
    ({"pixels": [0.5] * 783}, "expected 784 numbers"),
    ({"pixels": [0.5] * 785}, "expected 784 numbers"),
    ({"pixels": []}, "expected 784 numbers"),
    ({"pixels": [[0.5] * 28] * 27}, "expected 28 rows of 28"),
    ({"pixels": [[0.5] * 28] * 27 + [[0.5] * 27]}, "lengths 27, 28"),
    ({"pixels": [[[0.5]] * 28] * 28}, "numbers only"),
    ({"pixels": ["0.5"] * 784}, "numbers only, value 0 is a string"),
    ({"pixels": [True] * 784}, "a boolean"),
    ({"pixels": [None] * 784}, "null"),
    ({"pixels": "0.5"}, "expected a list"),
    ({"pixels": {"a": 1}}, "expected a list"),
    ({"pixels": [255] * 784}, "divide 0..255 bytes by 255"),
    ({"pixels": [-0.5] + [0.5] * 783}, "values in [0, 1]"),
    ({"pixels": [0.5] * 784, "image": data_url(GOOD_PNG)}, "exactly one"),
    ({}, "exactly one"),
    ({"pixels": [0.5] * 784, "explain": ["everything"]}, "explain"),
    ({"pixels": [0.5] * 784, "extra": 1}, "extra"),
    ([0.5] * 784, "object"),
]


@pytest.mark.parametrize("body, message", BAD_JSON_BODIES,
                         ids=[f"json{i}" for i in range(len(BAD_JSON_BODIES))])
def test_bad_json_bodies_get_422_with_a_message(client, body, message):
    r = post(client, body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and message in detail, detail


NON_FINITE = [
    (b'{"pixels": [NaN' + b", 0.5" * 783 + b"]}", "1 of 784 values are NaN or infinite"),
    (b'{"pixels": [Infinity' + b", 0.5" * 783 + b"]}", "NaN or infinite"),
    (b'{"pixels": [-Infinity' + b", 0.5" * 783 + b"]}", "NaN or infinite"),
    (b'{"pixels": [1e999' + b", 0.5" * 783 + b"]}", "NaN or infinite"),
    (b'{"pixels": [' + b", ".join([b"NaN"] * 784) + b"]}", "784 of 784"),
    (b'{"pixels": [[NaN' + b", 0.5" * 27 + b"]" + b", [" + b", ".join([b"0.5"] * 28) + b"]" * 1
     + b"".join([b", [" + b", ".join([b"0.5"] * 28) + b"]"] * 26) + b"]}", "NaN or infinite"),
]


@pytest.mark.parametrize("raw, message", NON_FINITE, ids=[f"nan{i}" for i in range(6)])
def test_nan_and_infinity_literals_get_422(client, raw, message):
    json.loads(raw)  # Python's parser accepts these literals: the API must refuse them itself
    r = client.post("/api/predict", content=raw, headers=JSON)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]


@pytest.mark.parametrize("raw, message", [
    (b'{"pixels": [', "not valid JSON"),
    (b"", "the body is empty"),
    (b"\xff\xfe\x00garbage", ""),
    (b'{"image": "' + b"A" * 10 + b'"', "not valid JSON"),
], ids=["truncated", "empty", "not-utf8", "unterminated"])
def test_malformed_bodies_get_4xx(client, raw, message):
    r = client.post("/api/predict", content=raw, headers=JSON)
    assert 400 <= r.status_code < 500, r.text
    assert message in r.json()["detail"]


@pytest.mark.parametrize("headers", [
    {"content-type": "text/plain"},
    {"content-type": "application/x-www-form-urlencoded"},
    {"content-type": "multipart/form-data; boundary=x"},
    {"content-type": "image/png"},
    {},
], ids=["text", "form", "multipart", "png", "none"])
def test_wrong_content_type_gets_415(client, headers):
    r = client.post("/api/predict", content=json.dumps({"pixels": [0.0] * 784}),
                    headers=headers)
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["detail"]


def test_json_with_charset_is_fine(client):
    r = client.post("/api/predict", content=json.dumps({"pixels": [0.0] * 784}),
                    headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_bodies_over_one_megabyte_get_413(client):
    big = json.dumps({"image": "A" * 1_000_000}).encode()
    r = client.post("/api/predict", content=big, headers=JSON)
    assert r.status_code == 413 and "1,000,000 bytes" in r.json()["detail"]
    # Without a Content-Length (chunked), the limit holds as the bytes arrive.
    r = client.post("/api/predict", content=chunked(big), headers=JSON)
    assert r.status_code == 413
    r = client.post("/api/predict", content=chunked(json.dumps({"pixels": [0] * 784}).encode(),
                                                    100), headers=JSON)
    assert r.status_code == 200
    # Just under the limit is read and judged on its content.
    under = json.dumps({"image": "A" * 999_000}).encode()
    assert len(under) < 1_000_000
    r = client.post("/api/predict", content=under, headers=JSON)
    assert r.status_code == 422


def test_unknown_paths_and_methods_get_json_4xx(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = client.get("/api/predict")
    assert r.status_code == 405 and "detail" in r.json()


def test_the_server_keeps_serving_after_bad_requests(client):
    for body, _ in BAD_JSON_BODIES[:8]:
        post(client, body)
    client.post("/api/predict", content=b"{", headers=JSON)
    assert client.get("/healthz").status_code == 200
    assert post(client, {"image": data_url(GOOD_PNG)}).status_code == 200


def test_an_unexpected_error_is_a_json_500_and_not_hidden_from_tests(model, monkeypatch):
    app = create_app(model, neighbours=False)

    def broken(image):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(app.state.explainer, "predict", broken)
    with local_client(app, raise_server_exceptions=False) as c:
        r = post(c, {"pixels": [0.0] * 784})
        assert r.status_code == 500
        assert r.json() == {"detail": "internal server error (RuntimeError); see the server log"}
        assert c.get("/healthz").status_code == 200
    with local_client(app) as c, pytest.raises(RuntimeError, match="planted bug"):
        post(c, {"pixels": [0.0] * 784})


# ---------------------------------------------------------------------- command line
def test_web_extra_missing_gives_an_install_hint(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("chainrule.web.app")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ImportError, match=r'pip install "chainrule\[web\]"'):
        import chainrule.web.app  # noqa: F401


def test_serve_defaults_to_loopback_and_reports_a_missing_model(tmp_path, capsys):
    args = cli.build_parser().parse_args(["serve", "m.npz"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert args.allowed_host == [] and args.picture_workers == 2
    assert cli.main(["serve", str(tmp_path / "missing.npz")]) == 1
    assert "model file not found" in capsys.readouterr().err


def test_a_killed_server_leaves_no_worker_behind(run, tmp_path):
    with serve_process(run / "model.npz", data_dir=tmp_path) as server:
        tasks = Path(f"/proc/{server.proc.pid}/task").glob("*/children")  # every thread's
        workers = [int(pid) for children in tasks for pid in children.read_text().split()]
        assert len(workers) >= 2, "the picture workers (and multiprocessing's tracker)"
        server.proc.kill()
        server.proc.wait()
        deadline = time.monotonic() + 10
        try:
            while any(Path(f"/proc/{pid}").exists() for pid in workers):
                assert time.monotonic() < deadline, "a worker outlived the server"
                time.sleep(0.1)
        finally:
            for pid in workers:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def test_chainrule_serve_runs_a_server(run, tmp_path):
    port = free_port()
    env = {**os.environ, "CHAINRULE_DATA": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chainrule", "serve", str(run / "model.npz"), "--port",
         str(port), "--data-dir", str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.load(r) == {"status": "ok"}
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "chainrule serve did not start"
                time.sleep(0.1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/predict", headers=JSON,
            data=json.dumps({"image": data_url(drawn_one())}).encode())
        with urllib.request.urlopen(request, timeout=10) as r:
            assert json.load(r)["class"] == 1
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in out
