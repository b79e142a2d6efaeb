"""The JSON config of a saved model (its ``__chainrule__`` entry), checked field by field.

``check_config(config, where)`` returns the config with its optional fields filled in, or raises
one ValueError naming the field, e.g.
``load_model: m.npz: model.layers[2].class_name must be a string, got 7``. The schema:

    format             "chainrule-model"
    format_version     int, 1 … FORMAT_VERSION
    chainrule_version  str                                        (optional)
    model              name str, dtype "float32" | "float64", seed null | int ≥ 0,
                       input_shape [int > 0, …],
                       layers [{class_name str, config {…}, module str (optional)}, …]
    compile            null | {loss {class_name str, config {…}},
                               optimizer {class_name str, config {…}, iterations int ≥ 0,
                                          epoch int ≥ 0},
                               metrics [str, …], include_optimizer bool}
    rng_states         {layer name: {…}}             (optional; format 1 only: format 2 keeps
                                                    the random states in the arrays)
    metadata           {…}                                        (optional)

Unknown keys are refused: a file that carries something this version does not read says so
instead of being half understood. The values inside a layer's, loss's or optimizer's
``config`` are checked by their constructors (see ``validate.py``), which ``load_model`` calls
with the same field names in its messages.
"""

from __future__ import annotations

import json

FORMAT = "chainrule-model"
FORMAT_VERSION = 2
DTYPES = ("float32", "float64")


def show(value, limit: int = 60) -> str:
    """``value`` as JSON text for a message, cut to about ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class _Checker:
    """Field checks that raise ``ValueError("{where}: {field} must be …, got …")``."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, expected: str, value) -> None:
        raise ValueError(f"{self.where}: {field} must be {expected}, got {show(value)}")

    def object(self, value, field: str, required=(), optional=(), closed: bool = True) -> dict:
        """A JSON object with the ``required`` keys; with ``closed``, no keys but those and
        the ``optional`` ones."""
        if not isinstance(value, dict):
            self.fail(field, "a JSON object", value)
        missing = [key for key in required if key not in value]
        if missing:
            raise ValueError(
                f"{self.where}: {field} lacks {', '.join(map(repr, missing))} "
                f"(it has {sorted(value)})"
            )
        unknown = sorted(set(value) - set(required) - set(optional))
        if closed and unknown:
            raise ValueError(
                f"{self.where}: {field} has unknown keys {unknown}; expected "
                f"{sorted((*required, *optional))}"
            )
        return value

    def string(self, value, field: str) -> str:
        if not isinstance(value, str):
            self.fail(field, "a string", value)
        return value

    def integer(self, value, field: str, minimum: int = 0) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.fail(field, "a positive integer" if minimum == 1 else
                      f"an integer >= {minimum}", value)
        return value

    def boolean(self, value, field: str) -> bool:
        if not isinstance(value, bool):
            self.fail(field, "true or false", value)
        return value

    def array(self, value, field: str, nonempty: bool = False) -> list:
        if not isinstance(value, list) or (nonempty and not value):
            self.fail(field, "a non-empty JSON array" if nonempty else "a JSON array", value)
        return value

    def spec(self, value, field: str, optional=()) -> dict:
        """``{class_name: str, config: {…}}``, the saved form of a layer, loss or optimizer."""
        self.object(value, field, ("class_name", "config"), optional)
        self.string(value["class_name"], f"{field}.class_name")
        self.object(value["config"], f"{field}.config", closed=False)
        return value


def check_config(config, where: str) -> dict:
    """Check a parsed model config against the schema above; fill in optional fields.

    Args:
        config: what ``json.loads`` made of the ``__chainrule__`` entry.
        where: the message prefix, e.g. ``"load_model: m.npz"``.

    Returns:
        The same dict, with ``compile`` (None), ``rng_states`` ({}), ``metadata`` ({}),
        ``compile.metrics`` ([]), ``compile.include_optimizer`` (True) and the optimizer's
        ``iterations`` and ``epoch`` (0) set when absent.

    Raises:
        ValueError: naming the first field that does not fit, with what it holds.
    """
    check = _Checker(where)
    if not isinstance(config, dict):
        check.fail("the config", "a JSON object", config)
    if config.get("format") != FORMAT:
        raise ValueError(f"{where} is not a chainrule model (format {config.get('format')!r})")
    check.object(config, "the config", ("format", "format_version", "model"),
                 ("chainrule_version", "compile", "rng_states", "metadata"))
    version = check.integer(config["format_version"], "format_version", minimum=1)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} uses format version {version}, newer than this chainrule "
            f"({FORMAT_VERSION}); upgrade chainrule"
        )
    if "chainrule_version" in config:
        check.string(config["chainrule_version"], "chainrule_version")
    _check_model(check, config["model"])
    config["compile"] = _check_compile(check, config.get("compile"))
    if version >= 2 and "rng_states" in config:
        raise ValueError(f"{where}: rng_states belongs to format 1 files; format {version} "
                         "keeps the random states as arrays (<layer>.rng)")
    config["rng_states"] = check.object(config.get("rng_states", {}), "rng_states",
                                        closed=False)
    for name, state in config["rng_states"].items():
        check.object(state, f"rng_states[{show(name)}]", closed=False)
    config["metadata"] = check.object(config.get("metadata", {}), "metadata", closed=False)
    return config


def _check_model(check: _Checker, model) -> None:
    check.object(model, "model", ("name", "dtype", "input_shape", "layers"), ("seed",))
    check.string(model["name"], "model.name")
    if model["dtype"] not in DTYPES:
        check.fail("model.dtype", '"float32" or "float64"', model["dtype"])
    seed = model.get("seed")
    if seed is not None:
        check.integer(seed, "model.seed")
    shape = model["input_shape"]
    if shape is None:
        raise ValueError(f"{check.where} describes a model that was never built "
                         "(model.input_shape is null)")
    check.array(shape, "model.input_shape", nonempty=True)
    for i, dim in enumerate(shape):
        check.integer(dim, f"model.input_shape[{i}]", minimum=1)
    check.array(model["layers"], "model.layers", nonempty=True)
    for i, spec in enumerate(model["layers"]):
        field = f"model.layers[{i}]"
        check.spec(spec, field, optional=("module",))
        if "module" in spec:
            check.string(spec["module"], f"{field}.module")
        if "input_shape" in spec["config"]:
            raise ValueError(
                f"{check.where}: {field}.config.input_shape is not part of a saved model (a "
                "saved model is built, and its input shape is model.input_shape)"
            )


def _check_compile(check: _Checker, compiled) -> dict | None:
    if compiled is None:
        return None
    check.object(compiled, "compile", ("loss", "optimizer"), ("metrics", "include_optimizer"))
    check.spec(compiled["loss"], "compile.loss")
    optimizer = check.spec(compiled["optimizer"], "compile.optimizer",
                           optional=("iterations", "epoch"))
    optimizer.setdefault("iterations", 0)
    optimizer.setdefault("epoch", 0)
    check.integer(optimizer["iterations"], "compile.optimizer.iterations")
    check.integer(optimizer["epoch"], "compile.optimizer.epoch")
    metrics = check.array(compiled.setdefault("metrics", []), "compile.metrics")
    for i, metric in enumerate(metrics):
        check.string(metric, f"compile.metrics[{i}]")
    check.boolean(compiled.setdefault("include_optimizer", True), "compile.include_optimizer")
    return compiled
