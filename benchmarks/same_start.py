"""The cnn preset in chainrule and its PyTorch twin from the same weights on the same batches.

Usage:
    CHAINRULE_DATA=../shared/data python benchmarks/same_start.py [--steps 900] [--dropout 0]
        [--augment 0] [--lr 2e-3] [--threads 2]

Builds ``models.cnn`` without its random shifts (seed 0), copies it into PyTorch with
``chainrule.interop.to_torch``, and trains both with Adam at a constant rate on the same
batches of 128 (one fixed order of the 60,000 training images), so that only float32 rounding
(and, with ``--dropout``, each framework's own dropout masks) tells them apart. With
``--augment S`` one ``layers.RandomShift(S)`` moves every batch before both frameworks see it,
so they train on the very same shifted images. Prints the mean
training loss of the last 50 steps every 50 steps, and both test accuracies at the end. A
difference in how the two learn that the one-step equality tests (tests/test_torch_interop.py)
cannot see would show here as losses that drift apart. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from chainrule import layers, losses, models, optimizers
from chainrule.data import load_mnist
from chainrule.interop.torch import to_torch

BATCH = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--augment", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    (x, y), (x_test, y_test) = load_mnist()
    x, x_test = x[:, None], x_test[:, None]
    model = models.cnn(input_shape=(1, 28, 28), dropout=args.dropout, augment=0, seed=0)
    module = to_torch(model).train()
    shift = layers.RandomShift(args.augment, seed=0) if args.augment else None
    model.compile(optimizers.Adam(args.lr), losses.SparseCategoricalCrossEntropy(from_logits=True))
    opt = torch.optim.Adam(module.parameters(), lr=args.lr)
    order = np.random.default_rng(0).permutation(len(x))
    per_epoch = len(x) // BATCH
    ours, theirs = [], []
    print("| step | chainrule loss (mean of the last 50) | PyTorch loss |")
    print("|---|---|---|")
    for step in range(args.steps):
        start = (step % per_epoch) * BATCH
        idx = order[start:start + BATCH]
        batch = x[idx] if shift is None else shift.forward(x[idx], training=True)
        loss, _ = model.train_step(batch, y[idx])
        ours.append(loss)
        out = module(torch.from_numpy(batch))
        torch_loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y[idx]))
        opt.zero_grad()
        torch_loss.backward()
        opt.step()
        theirs.append(torch_loss.item())
        if (step + 1) % 50 == 0 or step == args.steps - 1:
            print(f"| {step + 1} | {np.mean(ours[-50:]):.4f} | {np.mean(theirs[-50:]):.4f} |",
                  flush=True)
    ours_acc = float(np.mean(np.argmax(model.predict(x_test, batch_size=1000), 1) == y_test))
    module.eval()
    with torch.no_grad():
        pred = torch.cat([module(torch.from_numpy(x_test[i:i + 1000])).argmax(1)
                          for i in range(0, len(x_test), 1000)])
    theirs_acc = float(np.mean(pred.numpy() == y_test))
    print(f"\ntest accuracy after {args.steps} steps (dropout {args.dropout}, largest shift "
          f"{args.augment}): chainrule "
          f"{100 * ours_acc:.2f}%, PyTorch {100 * theirs_acc:.2f}%")


if __name__ == "__main__":
    main()
