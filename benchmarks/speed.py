"""chainrule vs PyTorch on the CPU: training throughput, inference, the GEMM floor, peak memory.

Usage:
    CHAINRULE_DATA=../shared/data python benchmarks/speed.py [--reps 3] [--threads 2]
    python benchmarks/speed.py --lm-only      (the language-model rows alone)

Both frameworks train the same model on the same in-memory MNIST (float32, 60,000 images,
reshuffled every epoch, no DataLoader) with Adam(1e-3) and the same number of threads, after a
short warm-up run of each; the runs interleave (chainrule, torch, chainrule, torch, …) so drift
hits both, and each figure is the median of ``--reps`` one-epoch runs from a fresh model (the
CNN row times ``--cnn-steps`` batches instead of a full epoch). The GEMM floor (the products of
a training step, in a step's order, median of five timed repeats: see ``gemm_floor``) is
measured after each pair of MLP runs and the ratio and "/ floor" columns are medians of the
per-run ratios. The language-model rows time
``--lm-steps`` training steps of each preset of chainrule.models.LM_PRESETS against its torch
twin (benchmarks/lm_torch.py) on the words of /usr/share/dict/words, in target characters
(tokens) per second. This is a benchmark, not a test.

Two BLAS settings: NumPy's OpenBLAS with the kernels this machine's environment picks
(``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` as set), then, in a subprocess of this script with
both variables removed from its environment only, the kernels OpenBLAS picks for the CPU itself
(``--blas native``; threadpoolctl names them). PyTorch uses its own kernels in both.
``--cnn-only`` runs just the cnn rows, in both settings, and the cnn's peak memory.

Peak memory is the high-water mark of resident memory (``VmHWM``) that the `chainrule train`
process reports for itself at exit; the ``ru_maxrss`` of a child would also count this
process's own memory, which a child started by ``vfork`` shares until it runs the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-memory run")
    parser.add_argument("--skip-cnn", action="store_true", help="skip the cnn row")
    parser.add_argument("--rss-models", default="mlp",
                        help="presets whose `chainrule train --epochs 1` peak memory is measured, "
                             "e.g. mlp,cnn")
    parser.add_argument("--blas", choices=("both", "as-set", "native"), default="both",
                        help="BLAS kernels: as this machine's environment sets them, the CPU's "
                             "own (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset), or both")
    parser.add_argument("--cnn-steps", type=int, default=40,
                        help="training steps timed for the CNN row (an epoch is 469)")
    parser.add_argument("--lm-steps", type=int, default=30,
                        help="training steps timed for each language-model row")
    parser.add_argument("--skip-lm", action="store_true", help="skip the language-model rows")
    parser.add_argument("--lm-only", action="store_true",
                        help="only the language models' training tokens/s (no MNIST needed)")
    parser.add_argument("--cnn-only", action="store_true",
                        help="only the cnn rows (both BLAS settings) and the cnn's peak RSS")
    # The child process that times the cnn with the BLAS variables removed; prints JSON.
    parser.add_argument("--cnn-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


ARGS = parse_args()
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if ARGS.blas == "native" and any(var in os.environ for var in BLAS_VARS):
    # OpenBLAS reads them when NumPy loads it: start again without them, in this process only.
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import chainrule as cr  # noqa: E402
from chainrule import kernels, layers, losses, optimizers  # noqa: E402
from chainrule.data import load_mnist  # noqa: E402

torch.set_num_threads(ARGS.threads)
threadpool_limits(ARGS.threads)

MLP = (784, 256, 256, 10)
SOFTMAX = (784, 10)


def chainrule_model(sizes, seed=0):
    stack = []
    for units in sizes[1:-1]:
        stack.append(layers.Dense(units, activation="relu", kernel_initializer="he_normal"))
    stack.append(layers.Dense(sizes[-1]))
    model = cr.Sequential(stack, seed=seed)
    model.build((sizes[0],))
    model.compile(optimizers.Adam(1e-3),
                  losses.SparseCategoricalCrossEntropy(from_logits=True))
    return model


def torch_model(sizes, seed=0):
    torch.manual_seed(seed)
    mods = []
    for a, b in zip(sizes[:-2], sizes[1:-1], strict=True):
        mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    mods.append(torch.nn.Linear(sizes[-2], sizes[-1]))
    model = torch.nn.Sequential(*mods)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def chainrule_cnn(seed=0):
    """The cnn preset without its RandomShift (data augmentation is not part of the network)."""
    from chainrule import models

    return models.cnn(input_shape=(1, 28, 28), augment=0, seed=seed)


def torch_cnn(seed=0):
    torch.manual_seed(seed)
    nn = torch.nn

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 5, bias=False), nn.BatchNorm2d(c_out), nn.MaxPool2d(2),
                nn.ReLU()]

    model = nn.Sequential(
        *block(1, 32), *block(32, 64), nn.Flatten(),
        nn.Linear(1024, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(256, 10),
    )
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def steps_chainrule_cnn(x, y, batch, steps, seed):
    """Seconds for ``steps`` training steps of the cnn preset (after one warm-up step)."""
    model = chainrule_cnn(seed)
    xs = model.prepare_input(x[: batch * (steps + 1)], "benchmark")
    model.train_step(xs[:batch], y[:batch])
    start = time.perf_counter()
    for i in range(1, steps + 1):
        model.train_step(xs[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
    return time.perf_counter() - start


def steps_torch_cnn(x, y, batch, steps, seed):
    model, opt = torch_cnn(seed)
    lossf = torch.nn.functional.cross_entropy
    start = None
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = lossf(model(x[i * batch:(i + 1) * batch]), y[i * batch:(i + 1) * batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


#: The environment variables this machine sets to pin OpenBLAS's kernels (see the README).


def blas_kernels() -> str:
    """The BLAS NumPy uses, with the kernel family OpenBLAS picked (threadpoolctl)."""
    found = [f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')} kernels)"
             for d in threadpool_info() if d.get("user_api") == "blas"]
    return ", ".join(found) or "unknown BLAS"


def cnn_times(x, y):
    """Median seconds (chainrule, PyTorch) for ``--cnn-steps`` interleaved cnn training steps,
    and the BLAS kernels of this process."""
    x4 = x.reshape(-1, 1, 28, 28)
    tx4, ty = torch.from_numpy(x4), torch.from_numpy(y)
    ours, theirs = interleaved(
        lambda r: steps_chainrule_cnn(x4, y, 128, ARGS.cnn_steps, r),
        lambda r: steps_torch_cnn(tx4, ty, 128, ARGS.cnn_steps, r),
        ARGS.reps,
    )
    return {"ours": ours, "torch": theirs, "blas": blas_kernels()}


def cnn_times_native_blas():
    """``cnn_times`` in a child process of this script without ``BLAS_VARS`` in its
    environment, so that OpenBLAS chooses the CPU's own kernels."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--cnn-worker", "--reps", str(ARGS.reps),
         "--threads", str(ARGS.threads), "--cnn-steps", str(ARGS.cnn_steps)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def epoch_chainrule(sizes, x, y, batch, seed):
    model = chainrule_model(sizes, seed)
    start = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=batch, seed=seed, verbose=0)
    return time.perf_counter() - start


def epoch_torch(sizes, x, y, batch, seed):
    model, opt = torch_model(sizes, seed)
    gen = torch.Generator().manual_seed(seed)
    lossf = torch.nn.functional.cross_entropy
    start = time.perf_counter()
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), batch):
        idx = perm[i:i + batch]
        loss = lossf(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def interleaved(fn_a, fn_b, reps):
    a, b = [], []
    for r in range(reps):
        a.append(fn_a(r))
        b.append(fn_b(r))
    return statistics.median(a), statistics.median(b)


def gemm_floor(sizes, batch, steps, rounds=20, repeats=5):
    """Seconds of np.matmul per epoch for exactly the products a training step needs.

    Counted per Dense layer (D → M): forward x (B, D) @ W (D, M); weight gradient
    xᵀ (D, B) @ g (B, M); input gradient g (B, M) @ Wᵀ (M, D) for every layer but the first.
    Bias adds, activations, loss and optimizer are not counted: they are the work above the floor.

    The products run as a step runs them: the forward ones layer by layer, then the backward ones
    from the last layer down; one such round is one step's products. After a warm-up round,
    ``repeats`` times ``rounds`` rounds are timed, and the floor is the median seconds per round
    times ``steps``. A round keeps each product's operands as warm as in a real step (the
    product before it worked on other arrays), where timing one product many times on the same
    operands would keep all of them hot in cache; the median of several repeats keeps a moment of
    load on a shared machine out of the figure.
    """
    rng = np.random.default_rng(0)
    forward, backward, flops = [], [], 0
    for i, (d, m) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        x = rng.standard_normal((batch, d), dtype=np.float32)
        w = rng.standard_normal((d, m), dtype=np.float32)
        g = rng.standard_normal((batch, m), dtype=np.float32)
        forward.append((x, w))
        backward[:0] = [(x.T, g)] + ([(g, w.T)] if i > 0 else [])
    products = forward + backward
    for a, b in products:
        flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
    for a, b in products:
        a @ b
    per_round = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            for a, b in products:
                a @ b
        per_round.append((time.perf_counter() - start) / rounds)
    return statistics.median(per_round) * steps, flops * steps


# Runs `chainrule train …` (argv) in this process, then prints its own peak resident memory;
# a first argument "numpy-adam" keeps numba out (Adam's NumPy passes, chainrule.kernels off).
_TRAIN_AND_REPORT_PEAK = """
import sys
import chainrule.kernels
from chainrule.cli import main
if sys.argv[1] == "numpy-adam":
    chainrule.kernels.ENABLED = False
code = main(sys.argv[2:])
with open("/proc/self/status") as f:
    peak = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
print(f"VmHWM {peak}", file=sys.stderr)
sys.exit(code)
"""


def peak_rss_mb(model: str, *extra: str, numpy_adam: bool = False) -> float:
    """Peak RSS of `chainrule train --model MODEL --epochs 1 EXTRA…` (report included unless
    EXTRA says --no-report) on full MNIST, in a fresh process, as the process's own VmHWM
    (Linux), in MB; with ``numpy_adam``, Adam's NumPy passes instead of the compiled loop (so
    numba, and the LLVM it loads, stay out of the process)."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-c", _TRAIN_AND_REPORT_PEAK,
             "numpy-adam" if numpy_adam else "kernels", "train", "--model", model,
             "--epochs", "1", "--quiet", *extra, "--out", os.path.join(tmp, "run")],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
    peak = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("VmHWM ")]
    return int(peak[-1]) / 1024


def cnn_memory_mb(x) -> dict[str, float]:
    """What a cnn training step holds, in MB: the float32 training images, and the arrays the
    layers cache between a training forward and its backward for a batch of 128 (each
    layer's cache, counted once per distinct buffer)."""
    model = chainrule_cnn(0)
    xb = model.prepare_input(x[:128].reshape(-1, 1, 28, 28), "benchmark")
    h, seen, cached = xb, set(), {}
    for layer in model.layers:
        h = layer.apply(h, True)
        stack = [layer.cache]
        total = 0
        while stack:
            item = stack.pop()
            if isinstance(item, (tuple, list)):
                stack.extend(item)
            elif isinstance(item, np.ndarray):
                base = item if item.base is None else item.base
                if id(base) not in seen:
                    seen.add(id(base))
                    total += base.nbytes
        cached[layer.name] = total / 1e6
    return {"images": 60000 * 28 * 28 * 4 / 1e6, "caches": cached}


def cpu_model() -> str:
    """The processor's name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown processor"


# ---------------------------------------------------------------------- language models
def lm_rows(steps: int, reps: int) -> list[tuple]:
    """Training tokens/s of each language-model preset, chainrule vs its torch twin
    (benchmarks/lm_torch.py: same architecture, same initial weights, AdamW), on the first
    ``steps`` batches of a fixed shuffle of the words' training split. A token is a target
    character (padding excluded). Returns (preset, batch, tokens, chainrule s, torch s) rows."""
    import lm_torch

    from chainrule import generate, models
    from chainrule.data import text

    words = text.read_words("words")
    vocab = text.Vocabulary.from_words(words)
    train = text.split_words(words, seed=0)[0]
    rows = []
    for preset in models.LM_PRESETS:
        recipe = models.LM_RECIPE[preset]
        batch = recipe["batch_size"]
        probe = models.build_lm(preset, len(vocab), seed=0)
        x, y = generate.examples(probe, train, vocab)
        order = np.random.default_rng(0).permutation(len(x))[:steps * batch]
        x, y = x[order], y[order]
        tokens = int(np.sum(y != text.IGNORE_INDEX))

        def ours(r, preset=preset, x=x, y=y, batch=batch, recipe=recipe):
            model = models.build_lm(preset, len(vocab), seed=r, lr=recipe["lr"])
            model.train_step(x[:batch], y[:batch])  # warm-up: buffers, optimizer state
            start = time.perf_counter()
            for i in range(0, len(x), batch):
                model.train_step(x[i:i + batch], y[i:i + batch])
            return time.perf_counter() - start

        def theirs(r, preset=preset, x=x, y=y, batch=batch, recipe=recipe):
            twin = lm_torch.from_chainrule(preset, models.build_lm(preset, len(vocab), seed=r),
                                           models.LM_ARCH[preset])
            opt = torch.optim.AdamW(twin.parameters(), lr=recipe["lr"],
                                    weight_decay=recipe["weight_decay"])
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)

            def step(i):
                loss = lm_torch.loss_of(twin, tx[i:i + batch], ty[i:i + batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            step(0)
            start = time.perf_counter()
            for i in range(0, len(x), batch):
                step(i)
            return time.perf_counter() - start

        t_ours, t_theirs = interleaved(ours, theirs, reps)
        rows.append((preset, batch, tokens, t_ours, t_theirs))
    return rows


def print_lm_rows(rows, steps: int) -> None:
    print(f"\n| training a language model, {steps} steps | chainrule tokens/s | "
          "PyTorch tokens/s | ratio |")
    print("|---|---|---|---|")
    for preset, batch, tokens, t_ours, t_theirs in rows:
        unit = "windows" if preset == "mlp" else "words"
        print(f"| {preset} preset, batch {batch} {unit} | {tokens / t_ours:,.0f} | "
              f"{tokens / t_theirs:,.0f} | {t_theirs / t_ours:.2f} |")


def main():
    if ARGS.lm_only:
        rows = lm_rows(ARGS.lm_steps, ARGS.reps)
        print(f"machine: {platform.machine()} {cpu_model()}, {os.cpu_count()} cores, "
              f"{ARGS.threads} threads each; NumPy {np.__version__}, torch {torch.__version__}; "
              f"median of {ARGS.reps} interleaved runs; load average "
              f"{os.getloadavg()[0]:.1f}")
        print_lm_rows(rows, ARGS.lm_steps)
        return
    (x, y), (x_test, y_test) = load_mnist(flatten=True)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    # One short run of each first: imports, chainrule's compiled Adam loop (when numba is
    # installed; cached on disk after its first compilation), allocators.
    epoch_chainrule(MLP, x[:1024], y[:1024], 128, 0)
    epoch_torch(MLP, tx[:1024], ty[:1024], 128, 0)
    rows = []
    for name, sizes, batch in [("MLP 784-256-256-10", MLP, 128), ("MLP 784-256-256-10", MLP, 32),
                               ("MLP 784-256-256-10", MLP, 512),
                               ("softmax regression 784-10", SOFTMAX, 128)]:
        # The floor is measured right after each pair of epochs, so that a ratio to it
        # compares figures taken under the same load of a shared machine.
        steps = -(-len(x) // batch)
        runs = []
        for r in range(ARGS.reps):
            ours = epoch_chainrule(sizes, x, y, batch, r)
            theirs = epoch_torch(sizes, tx, ty, batch, r)
            runs.append((ours, theirs, *gemm_floor(sizes, batch, steps)))
        ours, theirs, floor, flops = (statistics.median(c) for c in zip(*runs, strict=True))
        ours_floor = statistics.median(o / f for o, _, f, _ in runs)
        theirs_floor = statistics.median(t / f for _, t, f, _ in runs)
        ratio = statistics.median(t / o for o, t, _, _ in runs)
        rows.append((f"{name}, batch {batch}", len(x) / ours, len(x) / theirs, ratio, floor,
                     ours_floor, theirs_floor, flops))

    cnn = None if ARGS.skip_cnn else cnn_times(x, y)

    model = chainrule_model(MLP)
    tmodel, _ = torch_model(MLP)
    txt = torch.from_numpy(x_test)

    def infer_ours(_):
        start = time.perf_counter()
        model.predict(x_test, batch_size=1000)
        return time.perf_counter() - start

    def infer_torch(_):
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(txt), 1000):
                tmodel(txt[i:i + 1000])
        return time.perf_counter() - start

    inf_ours, inf_torch = interleaved(infer_ours, infer_torch, max(ARGS.reps, 5))
    rss = {} if ARGS.skip_rss else {
        (m, numpy_adam): peak_rss_mb(m, numpy_adam=numpy_adam)
        for m in ARGS.rss_models.split(",") for numpy_adam in (False, True)}

    blas = [f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')} kernels)"
            for d in threadpool_info() if d.get("user_api") == "blas"]
    setting = "as this machine sets them" if ARGS.blas != "native" else \
        "the CPU's own (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this benchmark)"
    print(f"\nBLAS kernels {setting}: NumPy BLAS {', '.join(blas)}; "
          + "; ".join(f"{var}={os.environ.get(var, '(unset)')}" for var in BLAS_VARS))
    print(f"machine: {platform.machine()} {cpu_model()}, {os.cpu_count()} cores, "
          f"{ARGS.threads} threads each; "
          f"Python {platform.python_version()}, NumPy {np.__version__}, torch {torch.__version__}; "
          f"median of {ARGS.reps} interleaved one-epoch runs")
    print("\n| training, one epoch of 60,000 | chainrule samples/s | PyTorch samples/s | "
          "ratio | GEMM floor | chainrule / floor | PyTorch / floor |")
    print("|---|---|---|---|---|---|---|")
    for label, s_ours, s_torch, ratio, floor, ours_floor, theirs_floor, flops in rows:
        print(f"| {label} | {s_ours:,.0f} | {s_torch:,.0f} | {ratio:.2f} | "
              f"{floor:.3f} s ({flops / floor / 1e9:.0f} GFLOP/s) | {ours_floor:.2f}x | "
              f"{theirs_floor:.2f}x |")
    if cnn is not None:
        setting = "both variables unset" if ARGS.blas == "native" else "as this machine sets it"
        print_cnn_rows([(setting, cnn)])
    print("\n| inference, 10,000 test images, batch 1,000 | chainrule images/s | "
          "PyTorch images/s | ratio |")
    print("|---|---|---|---|")
    print(f"| MLP 784-256-256-10 | {len(x_test) / inf_ours:,.0f} | "
          f"{len(x_test) / inf_torch:,.0f} | {inf_torch / inf_ours:.2f} |")
    for (model_name, numpy_adam), peak in rss.items():
        adam = "Adam's NumPy passes, no numba" if numpy_adam else (
            "Adam's compiled loop" if kernels.available() else "Adam's NumPy passes")
        print(f"\npeak RSS of `chainrule train --model {model_name} --epochs 1` (full MNIST, "
              f"report included; {adam}): {peak:.0f} MB")
    if not ARGS.skip_rss and not ARGS.skip_cnn:
        print_cnn_memory(x)
    if not ARGS.skip_lm:
        print_lm_rows(lm_rows(ARGS.lm_steps, ARGS.reps), ARGS.lm_steps)
    if ARGS.blas == "both":
        sys.stdout.flush()
        argv = sys.argv[1:]
        if "--blas" in argv:
            i = argv.index("--blas")
            argv = argv[:i] + argv[i + 2:]
        argv = [a for a in argv if not a.startswith("--blas=")]
        subprocess.run([sys.executable, sys.argv[0], *argv, "--blas", "native", "--skip-rss"],
                       check=True)


def print_cnn_rows(cnn) -> None:
    """The cnn table: one row per (BLAS setting, ``cnn_times`` result) in ``cnn``."""
    samples = 128 * ARGS.cnn_steps
    print(f"\n| cnn preset training, batch 128, {ARGS.cnn_steps} steps, median of {ARGS.reps} "
          "interleaved | NumPy BLAS | chainrule samples/s | PyTorch samples/s | ratio |")
    print("|---|---|---|---|---|")
    for setting, result in cnn:
        print(f"| {setting} | {result['blas']} | {samples / result['ours']:,.0f} | "
              f"{samples / result['torch']:,.0f} | {result['torch'] / result['ours']:.2f} |")


def print_cnn_memory(x) -> None:
    """Peak RSS of a one-epoch cnn run, and what holds it."""
    rss = peak_rss_mb("cnn", "--no-report")
    memory = cnn_memory_mb(x)
    caches = memory["caches"]
    largest = ", ".join(f"{name} {mb:.1f}" for name, mb in
                        sorted(caches.items(), key=lambda kv: -kv[1])[:4])
    print(f"\npeak RSS of `chainrule train --model cnn --epochs 1 --no-report` (full MNIST): "
          f"{rss:.0f} MB; of it, the float32 training images {memory['images']:.0f} MB and the "
          f"layer caches of one batch of 128 {sum(caches.values()):.0f} MB (largest: "
          f"{largest} MB)")


def cnn_only() -> None:
    (x, y), _ = load_mnist(flatten=True)
    if ARGS.cnn_worker:
        print(json.dumps(cnn_times(x, y)))
        return
    print(f"machine: {platform.machine()} {cpu_model()}, {os.cpu_count()} cores, "
          f"{ARGS.threads} threads each; Python {platform.python_version()}, NumPy "
          f"{np.__version__}, torch {torch.__version__}")
    print_cnn_rows([("as this machine sets it", cnn_times(x, y)),
                    ("both variables unset", cnn_times_native_blas())])
    if not ARGS.skip_rss:
        print_cnn_memory(x)


if __name__ == "__main__":
    if ARGS.cnn_only or ARGS.cnn_worker:
        cnn_only()
    else:
        main()
