"""Time to accuracy: wall time from a fresh model until the MNIST test accuracy first reaches a bar,
chainrule against PyTorch running the same recipe.

Usage:
    CHAINRULE_DATA=../shared/data python benchmarks/time_to_accuracy.py [--models mlp,cnn]
        [--seeds 0,1,2] [--threads 2] [--dropout R] [--augment S]

The recipe is what `chainrule train --model NAME` runs (``chainrule.models``): the preset's
network and initialisation (He-normal hidden layers, Glorot-uniform output layer, zero biases),
Adam at the preset's learning rate, cosine-decayed to 0 per step over the preset's epochs, batch
128, the preset's dropout and random shifts (``models.DEFAULT_AUGMENT``: up to 1 pixel for the
mlp, 2 for the cnn), on the same 55,000 training images (the last 5,000 are train's validation
split, unused here). PyTorch 2.13 runs it with the same modules and initialisers, the same shifts
written in torch ops, ``torch.optim.Adam`` + ``CosineAnnealingLR`` stepped per batch, the
same number of threads and the same in-memory arrays (no DataLoader). After every epoch both
evaluate the 10,000 test images (batches of 1,000, counted in the time) and stop at the bar
(98.0% mlp, 99.0% cnn) or after the preset's epochs. The clock starts before the model is built.
``--dropout`` and ``--augment`` replace the preset's dropout rate and largest shift in both
frameworks (to see which part of the recipe a difference comes from).
Runs interleave (seed 0 chainrule, seed 0 PyTorch, seed 1 …); the table gives each seed's time and
epochs and the median over seeds, a second table each run's test accuracy after every epoch and
its seconds per epoch (evaluation included). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp", help="comma-separated presets: mlp, cnn")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frameworks", default="chainrule,torch")
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout rate for both frameworks (default: the preset's)")
    parser.add_argument("--augment", type=int, default=None,
                        help="largest random shift in pixels for both (default: the preset's)")
    return parser.parse_args()


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from chainrule import models  # noqa: E402
from chainrule.callbacks import Callback  # noqa: E402
from chainrule.data import load_mnist  # noqa: E402

torch.set_num_threads(ARGS.threads)
threadpool_limits(ARGS.threads)

BARS = {"mlp": 0.980, "cnn": 0.990}
BATCH = 128
TRAIN = 55_000


def test_accuracy_chainrule(model, x_test, y_test) -> float:
    return float(np.mean(np.argmax(model.predict(x_test, batch_size=1000), axis=1) == y_test))


class _StopAtBar(Callback):
    """After every epoch: test accuracy; stop once it reaches the bar."""

    def __init__(self, x_test, y_test, bar):
        self.x_test, self.y_test, self.bar = x_test, y_test, bar
        self.reached: int | None = None
        self.accuracies: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        self.accuracies.append(test_accuracy_chainrule(self.model, self.x_test, self.y_test))
        if self.accuracies[-1] >= self.bar:
            self.reached = epoch + 1
            self.model.stop_training = True


def run_chainrule(preset, seed, data):
    """(seconds, epochs to the bar or None, the test accuracy after each epoch)."""
    (x, y), (x_test, y_test) = data
    epochs = models.DEFAULT_EPOCHS[preset]
    start = time.perf_counter()
    model = models.build(preset, input_shape=x.shape[1:], seed=seed, dropout=dropout(preset),
                         augment=augment(preset))
    steps = model.steps_per_epoch(len(x), BATCH)
    optimizer = models.make_optimizer("adam", models.default_lr(preset), epochs * steps)
    model.compile(optimizer=optimizer, loss=model.loss, metrics=["accuracy"])
    stop = _StopAtBar(x_test, y_test, BARS[preset])
    model.fit(x, y, epochs=epochs, batch_size=BATCH, seed=seed, callbacks=[stop], verbose=0)
    return time.perf_counter() - start, stop.reached, stop.accuracies


def dropout(preset) -> float:
    return models.DEFAULT_DROPOUT[preset] if ARGS.dropout is None else ARGS.dropout


def augment(preset) -> int:
    return models.DEFAULT_AUGMENT[preset] if ARGS.augment is None else ARGS.augment


def torch_network(preset):
    nn = torch.nn

    def he(layer):
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        return layer

    def glorot(layer):
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
        return layer

    if preset == "mlp":
        mods, width = [nn.Flatten()], 784
        for units in models.DEFAULT_HIDDEN:
            mods += [he(nn.Linear(width, units)), nn.ReLU(), nn.Dropout(dropout(preset))]
            width = units
        return nn.Sequential(*mods, glorot(nn.Linear(width, 10)))

    def block(c_in, c_out):
        return [he(nn.Conv2d(c_in, c_out, 5, bias=False)), nn.BatchNorm2d(c_out), nn.MaxPool2d(2),
                nn.ReLU()]

    return nn.Sequential(
        *block(1, 32), *block(32, 64), nn.Flatten(),
        he(nn.Linear(1024, 256, bias=False)), nn.BatchNorm1d(256), nn.ReLU(),
        nn.Dropout(dropout(preset)), glorot(nn.Linear(256, 10)),
    )


def random_shift(x, max_shift, gen):
    """Each image of x (N, 1, H, W) moved by its own (δᵢ, δⱼ) in {−s, …, s}², zero-filled, as
    chainrule's RandomShift."""
    n, _, h, w = x.shape
    s = max_shift
    padded = torch.nn.functional.pad(x, (s, s, s, s))
    offsets = torch.randint(-s, s + 1, (n, 2), generator=gen)
    rows = (s - offsets[:, 0])[:, None] + torch.arange(h)
    cols = (s - offsets[:, 1])[:, None] + torch.arange(w)
    shifted = padded[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return shifted[:, None]


def run_torch(preset, seed, data):
    (x, y), (x_test, y_test) = data
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    # (N, 1, 28, 28) for both: random_shift moves such images, and the mlp's nn.Flatten
    # flattens them as chainrule's Flatten flattens (N, 28, 28).
    x, x_test = x[:, None], torch.from_numpy(x_test)[:, None]
    shift = augment(preset)
    epochs = models.DEFAULT_EPOCHS[preset]
    start = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = torch_network(preset)
    steps = -(-len(x) // BATCH)
    opt = torch.optim.Adam(model.parameters(), lr=models.default_lr(preset))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    lossf = torch.nn.functional.cross_entropy
    accuracies = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            xb = x[idx]
            if shift:
                xb = random_shift(xb, shift, gen)
            loss = lossf(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x_test[i:i + 1000]).argmax(1)
                              for i in range(0, len(x_test), 1000)])
        accuracies.append(float((pred.numpy() == y_test).mean()))
        if accuracies[-1] >= BARS[preset]:
            return time.perf_counter() - start, epoch + 1, accuracies
    return time.perf_counter() - start, None, accuracies


RUNNERS = {"chainrule": run_chainrule, "torch": run_torch}
LABELS = {"chainrule": "chainrule", "torch": "PyTorch"}


def main() -> None:
    (x, y), test = load_mnist()
    data = ((x[:TRAIN], y[:TRAIN]), test)
    seeds = [int(s) for s in ARGS.seeds.split(",")]
    frameworks = ARGS.frameworks.split(",")
    results = {}
    for preset in ARGS.models.split(","):
        for seed in seeds:
            for fw in frameworks:
                seconds, reached, accuracies = RUNNERS[fw](preset, seed, data)
                results[preset, fw, seed] = (seconds, reached, accuracies)
                print(f"{preset} {fw} seed {seed}: {seconds:.1f} s, "
                      f"{'bar at epoch ' + str(reached) if reached else 'bar not reached'} "
                      f"(test accuracy after each epoch: {percentages(accuracies)})",
                      file=sys.stderr, flush=True)
    blas = [f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')} kernels)"
            for d in threadpool_info() if d.get("user_api") == "blas"]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, {ARGS.threads} threads each; "
          f"Python {platform.python_version()}, NumPy {np.__version__} ({', '.join(blas)}), "
          f"torch {torch.__version__}")
    if ARGS.dropout is not None or ARGS.augment is not None:
        print("recipe changed in both frameworks: " + ", ".join(
            f"{name} {value}" for name, value in (("dropout", ARGS.dropout),
                                                   ("largest shift", ARGS.augment))
            if value is not None))
    print("\n| model | test accuracy bar | framework | "
          + " | ".join(f"seed {s}" for s in seeds) + " | median |")
    print("|---|---|---|" + "---|" * len(seeds) + "---|")
    medians = {}
    for preset in ARGS.models.split(","):
        for fw in frameworks:
            cells, times = [], []
            for seed in seeds:
                seconds, reached, _ = results[preset, fw, seed]
                cells.append(f"{seconds:.1f} s ({reached} epochs)" if reached else
                             f"not reached in {models.DEFAULT_EPOCHS[preset]} epochs")
                times.append(seconds if reached else float("inf"))
            medians[preset, fw] = statistics.median(times)
            print(f"| {preset} | {100 * BARS[preset]:.1f}% | {LABELS[fw]} | " + " | ".join(cells)
                  + f" | {medians[preset, fw]:.1f} s |")
    if set(frameworks) == {"chainrule", "torch"}:
        for preset in ARGS.models.split(","):
            ratio = medians[preset, "chainrule"] / medians[preset, "torch"]
            print(f"\n{preset}: chainrule's median time is {ratio:.2f}× PyTorch's")
    print("\n| model | framework | seed | test accuracy after each epoch | seconds per epoch |")
    print("|---|---|---|---|---|")
    for (preset, fw, seed), (seconds, _, accuracies) in results.items():
        print(f"| {preset} | {LABELS[fw]} | {seed} | {percentages(accuracies)} | "
              f"{seconds / len(accuracies):.1f} |")


def percentages(accuracies) -> str:
    return ", ".join(f"{100 * a:.2f}%" for a in accuracies)


if __name__ == "__main__":
    main()
