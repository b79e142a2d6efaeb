"""Where a training step's time goes: forward and backward of every layer, loss, optimizer.

Usage:
    CHAINRULE_DATA=../shared/data python benchmarks/profile_step.py [--model cnn|mlp] [--steps 40]

Runs the preset's training step by hand (the same calls as ``Sequential.train_step``) on real
MNIST batches of 128 with 2 BLAS threads, timing each part; prints milliseconds per step,
largest first, and the page faults per step (memory the kernel had to map and zero; see
``chainrule.allocator``, which ``compile`` applies unless glibc's own variables such as
``GLIBC_TUNABLES`` are set). ``--numpy-adam`` runs Adam's twelve NumPy passes instead of its
compiled loop (chainrule.kernels, when numba is installed), to compare the "optimizer" rows.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import resource
import time

from threadpoolctl import threadpool_limits

from chainrule import kernels, layers, models
from chainrule.data import load_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--numpy-adam", action="store_true",
                        help="Adam's NumPy passes instead of the compiled loop")
    args = parser.parse_args()
    kernels.ENABLED = not args.numpy_adam
    threadpool_limits(args.threads)
    batch, steps = args.batch_size, args.steps
    (x, y), _ = load_mnist()
    x, y = x[: batch * (steps + 1)], y[: batch * (steps + 1)]
    # The networks without their RandomShift, as benchmarks/speed.py compares them with PyTorch.
    if args.model == "cnn":
        model = models.cnn(input_shape=(1, 28, 28), augment=0, seed=0)
        x = x.reshape(-1, 1, 28, 28)
    else:
        model = models.mlp(augment=0, seed=0)
    times: dict[str, float] = {}

    def step(xb, yb) -> None:
        t = time.perf_counter()

        def lap(key):
            nonlocal t
            now = time.perf_counter()
            times[key] = times.get(key, 0.0) + now - t
            t = now

        h = xb
        for layer in model.layers:
            h = layer.apply(h, True)
            lap(f"forward  {layer.name}")
        model.loss(h, yb)
        grad = model.loss.backward()
        lap("loss")
        for i in range(len(model.layers) - 1, -1, -1):
            grad = model.layers[i].backward(grad, need_input_grad=i > 0)
            lap(f"backward {model.layers[i].name}")
        model.optimizer.step(model.parameters())
        lap("optimizer")

    step(x[:batch], y[:batch])  # warm-up: buffers and optimizer state
    times.clear()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for i in range(1, steps + 1):
        step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
    total = (time.perf_counter() - start) / steps * 1000
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    adam = "compiled loop" if kernels.available() else "NumPy passes"
    print(f"\n{args.model}, batch {batch}: {total:.1f} ms per step ({steps} steps; Adam: {adam}), "
          f"{faults:,.0f} page faults per step")
    print("| part | ms per step | share |")
    print("|---|---|---|")
    for key, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        ms = seconds / steps * 1000
        if ms >= 0.05:
            print(f"| {key} | {ms:.2f} | {100 * ms / total:.0f}% |")
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            shape = (batch, *layer.input_shape)
            counts = layer.multiply_adds(shape, training=True)
            print(f"\n{layer.name} on {shape}: {layer.algorithm_for(shape)}; multiply-adds of a "
                  "training step: " + ", ".join(
                      f"{name} {count / 1e6:,.0f} M" for name, count in counts.items()
                      if count is not None))


if __name__ == "__main__":
    main()
