"""Write the example notebooks from the cells below, outputs cleared.

    python examples/make_notebooks.py          # rewrites examples/*.ipynb

Edit a notebook here, not in Jupyter, and rerun this script: tests/test_notebooks.py checks
that the .ipynb files are exactly what this script writes, and runs each one top to bottom.
The notebooks find MNIST the way ``load_mnist()`` does (``$CHAINRULE_DATA`` first) and write
their GIFs into the folder they run in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SOFTMAX = [
    ("md", r"""
# 1. Softmax regression, as in the lecture

One linear layer and a softmax, trained with cross-entropy:

    z = W x + b          scores, one per class          (C,)
    a = softmax(z)       aₖ = exp(zₖ) / Σⱼ exp(zⱼ)      probabilities, summing to 1
    L = −Σₖ yₖ log aₖ    cross-entropy, y one-hot       = −log a_true

chainrule keeps a batch as rows, so the same model reads `Z = X W + b` with `X (N, D)`,
`W (D, C)`, `b (C,)`. In this notebook: the gradient `dL/dz = a − y` derived by hand and
checked three ways, the model on three classes of 2-D points, and on MNIST with its weights
drawn as images.
"""),
    ("code", r"""
%matplotlib inline
import numpy as np

import chainrule as cr
from chainrule import layers, losses, models, plot
from chainrule.data import load_mnist, make_blobs
"""),
    ("md", r"""
## The gradient of cross-entropy through softmax

The chain rule through a = softmax(z), one sample:

    ∂L/∂aₖ  = −yₖ / aₖ
    ∂aₖ/∂zⱼ = aₖ (δₖⱼ − aⱼ)                                      the softmax Jacobian
    ∂L/∂zⱼ  = Σₖ (−yₖ / aₖ) · aₖ (δₖⱼ − aⱼ)
            = −yⱼ + aⱼ Σₖ yₖ
            = aⱼ − yⱼ                                             since Σₖ yₖ = 1

With the loss averaged over a batch of N samples, `dL/dZ = (A − Y) / N`.

chainrule computes it on two paths. The teaching path: a `Softmax` layer, whose backward
applies the Jacobian `s ⊙ (g − ⟨g, s⟩)`, then `CategoricalCrossEntropy` on the probabilities,
whose backward is `−y / a / N`. The fused path: `SparseCategoricalCrossEntropy(from_logits=True)`
takes the scores z and returns `(softmax(z) − y) / N` directly. Both must equal the formula.
"""),
    ("code", r"""
rng = np.random.default_rng(0)
N, C = 5, 4
z = 2.0 * rng.standard_normal((N, C))
y = rng.integers(0, C, N)
Y = np.eye(C)[y]

# The teaching path: Softmax layer, then cross-entropy on probabilities.
softmax = layers.Softmax()
a = softmax.forward(z, training=True)
probability_ce = losses.CategoricalCrossEntropy()
probability_ce(a, Y)
dz_jacobian = softmax.backward(probability_ce.backward())

# The fused path: cross-entropy on the scores.
fused = losses.SparseCategoricalCrossEntropy(from_logits=True)
fused(z, y)
dz_fused = fused.backward()

dz_formula = (a - Y) / N
print("Jacobian path vs (a - y)/N:", np.abs(dz_jacobian - dz_formula).max())
print("fused path    vs (a - y)/N:", np.abs(dz_fused - dz_formula).max())
assert np.allclose(dz_jacobian, dz_formula, rtol=0, atol=1e-12)
assert np.allclose(dz_fused, dz_formula, rtol=0, atol=1e-12)
"""),
    ("md", r"""
And against the definition of a derivative: nudge each score by ±h and watch the loss,
`∂L/∂zᵢⱼ ≈ (L(z + h eᵢⱼ) − L(z − h eᵢⱼ)) / 2h`. `cr.gradcheck` does the same with a
more accurate difference formula and reports the worst entry.
"""),
    ("code", r"""
def loss_at(scores):
    return losses.SparseCategoricalCrossEntropy(from_logits=True)(scores, y)


h = 1e-6
numeric = np.zeros_like(z)
for i in range(N):
    for j in range(C):
        step = np.zeros_like(z)
        step[i, j] = h
        numeric[i, j] = (loss_at(z + step) - loss_at(z - step)) / (2 * h)

relative = np.abs(numeric - dz_formula).max() / np.abs(dz_formula).max()
print(f"largest difference to central differences, relative: {relative:.1e}")
assert relative < 1e-6
print(cr.gradcheck(fused, z, y))
"""),
    ("md", r"""
## Three classes in the plane

The lecture's red, green and blue points. Softmax regression separates classes with straight
lines: the boundary between classes k and j is where zₖ = zⱼ, a linear equation in x.
"""),
    ("code", r"""
x, y = make_blobs(n_samples=300, centers=3, seed=0)
model = models.softmax_regression(num_classes=3, input_shape=(2,), lr=0.1, seed=0)
history = model.fit(x, y, epochs=30, batch_size=32, seed=0, verbose=0)
print(f"training accuracy {history.history['accuracy'][-1]:.3f}")
assert history.history["accuracy"][-1] > 0.95
plot.plot_decision_regions(model, x, y)
"""),
    ("md", r"""
The same training, watched: W starts at zero (every class scores the same, so the whole
plane goes to class 0) and the lines settle between the clusters within a few epochs.
"""),
    ("code", r"""
from IPython.display import Image

fresh = models.softmax_regression(num_classes=3, input_shape=(2,), lr=0.1, seed=0)
figure = plot.animate_decision_regions(fresh, x, y, "blobs_training.gif", epochs=20, frames=10)
Image(filename="blobs_training.gif")
"""),
    ("md", r"""
## MNIST

784 pixels in, 10 scores out: 7,850 parameters. Two epochs are enough for about 92%.
"""),
    ("code", r"""
(x_train, y_train), (x_test, y_test) = load_mnist()  # looks in $CHAINRULE_DATA first
print(x_train.shape, x_train.dtype, y_train[:10])
model = models.softmax_regression(seed=0)
history = model.fit(x_train, y_train, epochs=2, batch_size=128, validation_split=1 / 12,
                    seed=0, verbose=0)
result = model.evaluate(x_test, y_test)
print(result)
assert result["accuracy"] > 0.9
"""),
    ("md", r"""
## What the model learned

Column c of W holds one weight per pixel for class c: drawn as a 28×28 image it is a template.
Red pixels raise the score of the class when inked, blue ones lower it. The 0 is a ring with a
blue hole, the 1 a vertical red stroke: the score zₖ = Σ Wᵢₖ xᵢ + bₖ is how well the digit
matches the template.
"""),
    ("code", r"""
plot.plot_weights(model)
"""),
]

MLP = [
    ("md", r"""
# 2. A multi-layer perceptron on MNIST

Two hidden layers of 256 ReLU units with dropout, trained with Adam on a 20,000-image subset
(to keep this notebook quick), then: its learning curves, its mistakes, what its first layer
looks at, why the activation matters for the gradients, and a small MLP bending decision
boundaries around spirals.
"""),
    ("code", r"""
%matplotlib inline
import numpy as np
from IPython.display import Image

import chainrule as cr
from chainrule import metrics, models, plot
from chainrule.data import load_mnist, make_spirals
"""),
    ("code", r"""
(x_train, y_train), (x_test, y_test) = load_mnist()
x_small, y_small = x_train[:20000], y_train[:20000]
model = models.mlp(hidden=(256, 256), dropout=0.2, seed=0)
model.summary()
history = model.fit(x_small, y_small, epochs=5, batch_size=128, validation_split=0.1, seed=0,
                    verbose=0)
plot.plot_learning_curves(history)
"""),
    ("md", r"""
Training accuracy is measured with dropout active and averaged over the epoch while the
weights still move, so it can sit below the validation accuracy early on.
"""),
    ("code", r"""
probs = model.predict_proba(x_test)
pred = probs.argmax(axis=1)
print(f"test accuracy {metrics.accuracy(y_test, pred):.4f}")
assert metrics.accuracy(y_test, pred) > 0.95
print(metrics.classification_report(y_test, pred))
plot.plot_confusion_matrix(y_test, pred)
"""),
    ("md", r"""
## Its mistakes

The test digits it got wrong while being most sure of itself. Many are ambiguous even to a
person; some are plain errors.
"""),
    ("code", r"""
plot.plot_mistakes(x_test, y_test, probs, n=20)
"""),
    ("md", r"""
## What the first layer looks at

Each hidden unit computes `relu(x · W[:, m] + b[m])`: its weight column, drawn as an image,
is the pattern it responds to. After a few epochs they are local stroke detectors laid over
noise from the random start.
"""),
    ("code", r"""
plot.plot_weights(model, max_images=64)
"""),
    ("md", r"""
## Vanishing gradients: sigmoid vs ReLU

Back-propagation multiplies the gradient by `Wᵀ` and by the activation's derivative at every
layer. The sigmoid's derivative is at most ¼, so through six sigmoid layers the gradient
reaching the first layer is orders of magnitude smaller than at the last one: the first
layers barely learn. ReLU's derivative is 1 where the unit is active, and He initialisation
keeps the scale, so every layer gets a gradient of similar size. `GradientNormLogger` records
‖∂L/∂W‖ of every layer after every step.
"""),
    ("code", r"""
loggers = {}
for activation in ("sigmoid", "relu"):
    net = models.mlp(hidden=(64,) * 6, activation=activation, lr=1e-3, seed=0)
    logger = cr.GradientNormLogger()
    net.fit(x_train[:4000], y_train[:4000], epochs=1, batch_size=64, seed=0, verbose=0,
            callbacks=[logger])
    loggers[activation] = logger

for name, logger in loggers.items():
    first, last = np.mean(logger.norms["dense_1.W"]), np.mean(logger.norms["dense_7.W"])
    print(f"{name:8s} first layer / last layer gradient norm: {first / last:.1e}")
plot.plot_gradient_norms(loggers)
"""),
    ("md", r"""
## Bending the boundary

Softmax regression can only draw straight boundaries. With two hidden layers the model can
carve out the three interleaved spiral arms; here it is, learning.
"""),
    ("code", r"""
x, y = make_spirals(n_samples=300, seed=0)
net = models.mlp(hidden=(64, 64), num_classes=3, input_shape=(2,), lr=2e-3, seed=0)
figure = plot.animate_decision_regions(net, x, y, "spirals_training.gif", epochs=40,
                                       frames=20)
print(figure.snapshots[-1])
Image(filename="spirals_training.gif")
"""),
]

GRADCHECK = [
    ("md", r"""
# 3. Gradient checking, and what a broken backward looks like

Every backward in chainrule is derived by hand, so every one can be wrong. The check is the
definition of the derivative: perturb one number by ±h, run the forward again, and compare
`(f(θ + h) − f(θ − h)) / 2h` with what backward said. `cr.gradcheck` does this in float64 for
a layer, a loss or a whole model, with Richardson extrapolation (error O(h⁴)), and reports
per array the largest relative error `|analytic − numeric| / max(|analytic|, |numeric|)`, the
worst entry, and both values there.

The step scales with each entry and halves until two estimates agree, so strong curvature
(log p at p = 10⁻⁶) is resolved rather than mistaken for a bug; the column "fd error" is the
estimated error of the numeric value itself (rounding in long sums shows up there, not as a
failure). At a kink (a ReLU input of exactly 0) the analytic value must equal the left or the
right one-sided derivative, and an array that is mostly kinks fails.
"""),
    ("code", r"""
import numpy as np

import chainrule as cr
from chainrule import layers, losses, models

rng = np.random.default_rng(0)
x = rng.standard_normal((4, 10))
print(cr.gradcheck(layers.Dense(3), x))
print()
print(cr.gradcheck(layers.Tanh(), x))
"""),
    ("md", r"""
A whole model: `f(θ) = loss(model(x), y)`, every parameter of every layer, plus the input.
"""),
    ("code", r"""
y = rng.integers(0, 3, 4)
model = models.mlp(hidden=(16, 16), activation="tanh", num_classes=3, input_shape=(10,),
                   seed=0)
report = cr.gradcheck(model, x, y)
print(report)
assert report.ok
"""),
    ("md", r"""
## A planted bug in an activation

tanh's derivative is `1 − y²`. Forget the square and the layer still trains, somewhat,
which is what makes such bugs dangerous. Checked on its own, its input gradient fails at
once.
"""),
    ("code", r"""
class BrokenTanh(layers.Layer):
    # y = tanh(x), with a planted bug in the backward: 1 − y instead of 1 − y².

    def _forward(self, x, training):
        y = np.tanh(x)
        if training:
            self.cache = y
        return y

    def _backward(self, grad_y, need_input_grad):
        y = self.cache
        return grad_y * (1 - y)  # the bug: dtanh/dx = 1 − y²


report = cr.gradcheck(BrokenTanh(), x)
print(report)
assert not report.ok
"""),
    ("md", r"""
Inside a model the report points at the bug. Gradients flow from the loss backwards, so
every array above the broken layer (closer to the loss) is still right, and every array
below it, which receives its wrong dL/dx, is wrong. The broken layer sits between the last
array that passes and the first that fails.
"""),
    ("code", r"""
broken = cr.Sequential([
    layers.Dense(16, input_shape=(10,)),
    BrokenTanh(),
    layers.Dense(16),
    layers.Tanh(),
    layers.Dense(3),
], seed=0)
broken.compile("adam", losses.SparseCategoricalCrossEntropy(from_logits=True))
report = cr.gradcheck(broken, x, y)
print(report)

failing = [entry.name for entry in report.entries if not entry.ok]
print("failing:", failing)
assert failing == ["input", "dense_1.W", "dense_1.b"]
print("layers:", [layer.name for layer in broken.layers])
"""),
    ("md", r"""
## A planted bug in a parameter gradient

This Dense layer's bias gradient takes the first sample's row instead of summing over the
batch, `dL/db = Σₙ gₙ`. Only that one array fails: the input gradient it passes down is
right, so nothing else is affected.
"""),
    ("code", r"""
class ForgetfulDense(layers.Dense):
    # z = x W + b, with a planted bug: dL/db is the first sample's gradient, not the sum.

    def _backward(self, grad_y, need_input_grad):
        grad_x = super()._backward(grad_y, need_input_grad)
        self.b.grad = grad_y[0].copy()  # the bug: dL/db = Σₙ gₙ
        return grad_x


forgetful = cr.Sequential([
    layers.Dense(16, activation="tanh", input_shape=(10,)),
    ForgetfulDense(16, name="forgetful"),
    layers.Tanh(),
    layers.Dense(3),
], seed=0)
forgetful.compile("adam", losses.SparseCategoricalCrossEntropy(from_logits=True))
report = cr.gradcheck(forgetful, x, y)
print(report)
failing = [entry.name for entry in report.entries if not entry.ok]
print("failing:", failing)
assert failing == ["forgetful.b"]
"""),
    ("md", r"""
The same check runs for every layer and loss in chainrule's test suite, together with a
comparison against PyTorch; `chainrule gradcheck --model mlp` runs it from the command line.
"""),
]

EXERCISES = [
    ("md", r"""
# 4. Exercises: write the backward pass, and let the grader find the bug

Every gradient in chainrule was derived by hand; `chainrule.exercises` asks you to do the same
and grades what you write. Each exercise has a statement (the math, what to return, the
shapes), a template to fill in, progressive hints, and a grader that runs your code on several
cases in float64 — a batch of one, shapes that are not square, logits of ±1000, inputs exactly
at a kink — and compares every output with chainrule's own layers, losses and optimizers.

When an output is wrong the grader says how, with a code from a fixed vocabulary: `transposed`,
`sign`, `batch_mean` (a missing or extra 1/N), `missing_sum`, `wrong_axis`, `unstable`,
`stale_weights`, `mutates_input`, … Your code runs in a separate process, so an exception, an
endless loop or an `exit()` in it is reported, never a crash of this notebook.

Below, three exercises the way a learner meets them: the template, a first attempt with a
typical bug and what the grader says, then an answer that passes.
"""),
    ("code", r"""
import numpy as np

from chainrule import exercises

print(exercises.names())
"""),
    ("md", r"""
## The Dense layer

z = x W + b. Backpropagation hands the layer dL/dz; it returns the gradients with respect to
its input and its two parameters.
"""),
    ("code", r"""
ex = exercises.get("dense")
print(ex.statement)
"""),
    ("code", r"""
print(ex.template())
"""),
    ("md", r"""
A first attempt. The three products are written from the chain rule, entry by entry — but the
bias gradient is left as one row per sample.
"""),
    ("code", r"""
def dense_backward(x, W, b, grad_z):
    grad_x = grad_z @ W.T
    grad_W = x.T @ grad_z
    grad_b = grad_z
    return grad_x, grad_W, grad_b


result = exercises.check("dense", dense_backward)
print(result)
assert result.diagnosis == ["missing_sum"]
"""),
    ("md", r"""
b is added to every row of z, so its gradient collects every row's: dL/db = Σₙ gₙ.
"""),
    ("code", r"""
def dense_backward(x, W, b, grad_z):
    grad_x = grad_z @ W.T
    grad_W = x.T @ grad_z
    grad_b = grad_z.sum(axis=0)
    return grad_x, grad_W, grad_b


result = exercises.check("dense", dense_backward)
print(result)
assert result.ok
"""),
    ("md", r"""
## Softmax

A forward that must survive logits of ±1000, and a backward that applies the Jacobian
diag(s) − s sᵀ to dL/ds without building it.
"""),
    ("code", r"""
print(exercises.get("softmax").statement)
"""),
    ("md", r"""
A first attempt, straight from the definition exp(zᵢ) / Σⱼ exp(zⱼ):
"""),
    ("code", r"""
def softmax_forward(z):
    e = np.exp(z)
    s = e / e.sum(axis=-1, keepdims=True)
    return s, s


def softmax_backward(grad_y, s):
    return s * (grad_y - (grad_y * s).sum(axis=-1, keepdims=True))


result = exercises.check("softmax", (softmax_forward, softmax_backward))
print(result)
assert result.diagnosis == ["unstable"]
"""),
    ("md", r"""
Right at moderate logits, NaN at large ones: exp(1000) overflows to inf, and inf / inf is NaN.
Subtracting each row's maximum changes nothing mathematically (the factor exp(−m) cancels)
and makes the largest exponent exp(0) = 1.
"""),
    ("code", r"""
def softmax_forward(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    s = e / e.sum(axis=-1, keepdims=True)
    return s, s


result = exercises.check("softmax", (softmax_forward, softmax_backward))
print(result)
assert result.ok
"""),
    ("md", r"""
A backward that builds each sample's (C, C) Jacobian is correct too, and passes; the grader
times it against chainrule's Softmax on 4,000 rows and adds a note when it is far slower.
"""),
    ("code", r"""
def softmax_backward_loop(grad_y, s):
    grad_z = np.empty_like(grad_y)
    for n in range(len(s)):
        J = np.diag(s[n]) - np.outer(s[n], s[n])
        grad_z[n] = J.T @ grad_y[n]
    return grad_z


result = exercises.check("softmax", (softmax_forward, softmax_backward_loop))
print(result)
assert result.ok and result.diagnosis == []
"""),
    ("md", r"""
## A Dense layer object

The student notebooks' layer class updated W inside `backward` and then returned dL/dx
computed with the *new* W: the gradient of a layer that the forward pass never ran.
"""),
    ("code", r"""
print(exercises.get("dense_layer").statement)
"""),
    ("code", r"""
class DenseLayer:
    def __init__(self, W, b, lr=0.1):
        self.W, self.b, self.lr = W, b, lr

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, grad_z):
        self.grad_W = self.x.T @ grad_z
        self.grad_b = grad_z.sum(axis=0)
        self.W = self.W - self.lr * self.grad_W      # the step, taken too early
        self.b = self.b - self.lr * self.grad_b
        return grad_z @ self.W.T

    def update(self, lr):
        pass


result = exercises.check("dense_layer", DenseLayer)
print(result)
assert result.diagnosis == ["stale_weights"]
"""),
    ("code", r"""
print(exercises.hint("dense_layer", level=3))
"""),
    ("code", r"""
class DenseLayer:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, grad_z):
        self.grad_W = self.x.T @ grad_z
        self.grad_b = grad_z.sum(axis=0)
        return grad_z @ self.W.T

    def update(self, lr):
        self.W = self.W - lr * self.grad_W
        self.b = self.b - lr * self.grad_b


result = exercises.check("dense_layer", DenseLayer)
print(result)
assert result.ok
"""),
    ("md", r"""
The same from a terminal, with progress kept between sessions (✓ in the list):

    chainrule exercise list
    chainrule exercise show conv2d
    chainrule exercise template conv2d > mine.py      # fill it in, then
    chainrule exercise check conv2d mine.py           # exit status 0 when it passes
    chainrule exercise hint conv2d --level 2
"""),
]

NOTEBOOKS = {
    "01_softmax_regression.ipynb": SOFTMAX,
    "02_mlp_mnist.ipynb": MLP,
    "03_gradient_checking.ipynb": GRADCHECK,
    "04_exercises.ipynb": EXERCISES,
}


def build(cells) -> nbformat.NotebookNode:
    """A notebook of the given (kind, source) cells, with stable cell ids and no outputs."""
    nb = new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    for i, (kind, source) in enumerate(cells):
        make = new_markdown_cell if kind == "md" else new_code_cell
        cell = make(source.strip("\n"))
        cell["id"] = f"cell-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main(out_dir=HERE) -> int:
    out_dir = Path(out_dir)
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), out_dir / name)
        print(out_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
