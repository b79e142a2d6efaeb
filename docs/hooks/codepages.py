"""Site content generated from chainrule itself at build time, so that it cannot drift.

- the exercises: one page each from ``exercises.get(name)`` (title, statement, template, the
  outputs compared, the cases graded on, the first hint only) and the index of them; never a
  solution, never a hint past level 1;
- the grader's diagnosis vocabulary, from ``exercises.CODES``;
- the command line: every (sub)command's ``--help``, walked from ``cli.build_parser()``;
- real ``chainrule explain-backward`` and ``chainrule gradcheck`` output;
- the JSON API of ``chainrule serve`` and ``chainrule studio``, from the apps' own OpenAPI
  schemas.

Each function returns Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re

import numpy as np


# ---------------------------------------------------------------------- exercises
def exercise_pages() -> dict[str, str]:
    """``exercises/<name>.md`` → page, in course order."""
    from chainrule import exercises

    names = exercises.names()
    return {f"exercises/{name}.md": _exercise_page(exercises.get(name), number, len(names))
            for number, name in enumerate(names, start=1)}


def exercise_nav() -> list[dict[str, str]]:
    """Nav entries for the exercise pages, in course order."""
    from chainrule import exercises

    return [{f"{number}. {name}": f"exercises/{name}.md"}
            for number, name in enumerate(exercises.names(), start=1)]


def _exercise_page(ex, number: int, total: int) -> str:
    cases = [case.label for case in ex.cases(np.random.default_rng(0))]
    outputs = ", ".join(f"`{out.name}`" for out in ex.outputs)
    entries = ", ".join(f"`{entry}`" for entry in ex.entries)
    hint = ex.hints[0] if ex.hints else None
    lines = [
        f"# {number}. {ex.name}: {ex.title}",
        "",
        f"Exercise {number} of {total}. You write {entries}; the grader runs it on the cases "
        f"below in float64 and compares {outputs} with chainrule's own answer.",
        "",
        "## Statement",
        "",
        _fence(ex.statement.rstrip(), "text"),
        "",
        "## Template",
        "",
        f"`chainrule exercise template {ex.name} > mine.py` writes this file:",
        "",
        _fence(ex.template().rstrip(), "python"),
        "",
        "## Grade it",
        "",
        _fence(f"chainrule exercise check {ex.name} mine.py     # exit status 0 when it passes",
               "bash"),
        "",
        "or, from Python or a notebook, with the function(s) defined there:",
        "",
        _fence("from chainrule import exercises\n\n"
               f"result = exercises.check({ex.name!r}, globals())\nprint(result)", "python"),
        "",
        "Graded on:",
        "",
        *[f"- {_escape(label)}" for label in cases],
        "",
    ]
    if hint is not None:
        more = len(ex.hints) - 1
        lines += [
            '??? tip "Stuck? The first hint"',
            "",
            "    " + _escape(hint),
            "",
        ]
        if more:
            lines += [
                f"{more} more hint{'s' if more > 1 else ''} (and a solution) are in the "
                f"package, not on this site: `chainrule exercise hint {ex.name} --level 2`.",
                "",
            ]
    lines += ["When an output is wrong, the report names it with one of the "
              "[diagnosis codes](index.md#what-the-grader-says)."]
    return "\n".join(lines) + "\n"


def exercise_index() -> str:
    """The table of exercises, for exercises/index.md."""
    from chainrule import exercises

    rows = ["| # | exercise | what you write |", "|---|---|---|"]
    for number, name in enumerate(exercises.names(), start=1):
        ex = exercises.get(name)
        rows.append(f"| {number} | [{name}]({name}.md) | {_escape(ex.title)} |")
    return "\n".join(rows)


def diagnosis_codes() -> str:
    """The table of the grader's codes, from ``exercises.CODES``."""
    from chainrule import exercises

    rows = ["| code | what the grader saw | what to look at |", "|---|---|---|"]
    for code, (saw, look) in exercises.CODES.items():
        rows.append(f"| `{code}` | {_escape(saw)} | {_escape(look)} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------- command line
def cli_reference() -> str:
    """Every command's ``--help``, as argparse prints it in an 80-column terminal."""
    from chainrule import cli

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"  # argparse reads the width when it formats
    try:
        parser = cli.build_parser()
        sections = [_help_section(parser, "chainrule", level=2)]
        for name, sub in _subcommands(parser):
            sections.append(_help_section(sub, f"chainrule {name}", level=2))
            for inner, subsub in _subcommands(sub):
                sections.append(_help_section(subsub, f"chainrule {name} {inner}", level=3))
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    return "\n\n".join(sections)


def cli_summary() -> str:
    """One row per command with its one-line help."""
    from chainrule import cli

    rows = ["| command | what it does |", "|---|---|"]
    parser = cli.build_parser()
    for name, sub, help_text in _subcommands(parser, with_help=True):
        rows.append(f"| [`chainrule {name}`](#{_anchor('chainrule ' + name)}) | "
                    f"{_escape(help_text)} |")
        for inner, _, inner_help in _subcommands(sub, with_help=True):
            full = f"chainrule {name} {inner}"
            rows.append(f"| [`{full}`](#{_anchor(full)}) | {_escape(inner_help)} |")
    return "\n".join(rows)


def _subcommands(parser: argparse.ArgumentParser, with_help: bool = False):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (name, sub, helps.get(name) or "") if with_help else (name, sub)


def _help_section(parser: argparse.ArgumentParser, title: str, level: int) -> str:
    text = parser.format_help().rstrip()
    return f"{'#' * level} `{title}` {{#{_anchor(title)}}}\n\n{_fence(text, 'text')}"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


# ---------------------------------------------------------------------- program output
def command_output(argv: list[str]) -> str:
    """What ``chainrule ARGV`` prints, run in this process, as a shell-session block."""
    from chainrule import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(argv))  # stderr: progress and time estimates, not the output
    if status != 0:
        raise RuntimeError(f"chainrule {' '.join(argv)} exited with {status}: "
                           f"{err.getvalue().strip()}")
    return _fence(f"$ chainrule {' '.join(argv)}\n{out.getvalue().rstrip()}", "text")


# ---------------------------------------------------------------------- README
def readme_command(which: str, readme) -> str:
    """A command of README.md, as a bash block: ``train`` (the first bash block, "Train a digit
    classifier") or ``test`` (the block after ``<!-- test-command -->``, the one CI runs)."""
    text = readme.read_text(encoding="utf-8")
    if which == "test":
        text = text.split("<!-- test-command -->", 1)[1]
    match = re.search(r"```bash\n(.*?)\n```", text, re.DOTALL)
    if match is None:
        raise ValueError(f"README.md has no bash block for the {which} command")
    return _fence(match.group(1), "bash")


def explain_backward_html() -> str:
    """``cr.explain_backward`` on the lecture's three points, as a notebook shows it."""
    import chainrule as cr
    from chainrule import models
    from chainrule.explain import lecture_example

    x, y = lecture_example(3, seed=0)
    model = models.softmax_regression(num_classes=3, input_shape=(2,), seed=0)
    return '<div class="nb-html" markdown="0">\n' + cr.explain_backward(model, x, y)._repr_html_() \
        + "\n</div>"


# ---------------------------------------------------------------------- serve
def serve_api() -> str:
    """The endpoints and JSON bodies of ``chainrule serve``, from its OpenAPI schema."""
    from chainrule import models
    from chainrule.web import create_app

    with contextlib.redirect_stderr(io.StringIO()):  # "nearest neighbours are turned off"
        schema = create_app(models.softmax_regression(), neighbours=False).openapi()
    return api_tables(schema, "the drawing page")


def studio_api() -> str:
    """The endpoints and JSON bodies of ``chainrule studio``, from its OpenAPI schema."""
    from chainrule.web.studio import create_studio_app

    return api_tables(create_studio_app().openapi(), "the studio page")


def api_tables(schema: dict, page: str) -> str:
    """A table of an app's endpoints, then one of each JSON body they name (OpenAPI)."""
    lines = ["| method | path | what it does | request body | answers |",
             "|---|---|---|---|---|"]
    used: list[str] = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            request = _ref_link(body.get("schema"), used) if body else ""
            answers = []
            for status, response in op["responses"].items():
                ref = response.get("content", {}).get("application/json", {}).get("schema")
                answers.append(f"{status} {_ref_link(ref, used)}".strip())
            lines.append(f"| `{method.upper()}` | `{path}` | {_escape(op.get('description', ''))}"
                         f" | {request} | {', '.join(answers)} |")
    lines.append(f"| `GET` | `/` | {page} (not in the schema) | | 200 HTML |")
    schemas = schema["components"]["schemas"]
    todo, seen = list(used), set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        for prop in schemas[name].get("properties", {}).values():
            todo += _refs(prop)
    for name in sorted(seen, key=lambda n: (n not in used, used.index(n) if n in used else 0, n)):
        lines += ["", _schema_table(name, schemas[name])]
    return "\n".join(lines)


def _ref_link(schema, used: list[str]) -> str:
    if not schema or "$ref" not in schema:
        return ""
    name = schema["$ref"].rsplit("/", 1)[-1]
    if name not in used:
        used.append(name)
    return f"[{name}](#{name.lower()})"


def _refs(schema) -> list[str]:
    if isinstance(schema, dict):
        found = [schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else []
        for value in schema.values():
            found += _refs(value)
        return found
    if isinstance(schema, list):
        return [ref for item in schema for ref in _refs(item)]
    return []


def _schema_table(name: str, schema: dict) -> str:
    required = set(schema.get("required", ()))
    lines = [f"### {name} {{#{name.lower()}}}", ""]
    if schema.get("description"):
        lines += [_escape(schema["description"].replace("``", "`")), ""]
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, prop in schema.get("properties", {}).items():
        lines.append(f"| `{field}` | {_type(prop)} | {'yes' if field in required else ''} | "
                     f"{_escape(prop.get('description', ''))} |")
    return "\n".join(lines)


def _type(prop: dict) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if "const" in prop:
        return f'`"{prop["const"]}"`'
    if "enum" in prop:
        return " \\| ".join(f'`"{v}"`' for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        size = ""
        if prop.get("minItems") is not None and prop.get("minItems") == prop.get("maxItems"):
            size = f" of {prop['minItems']}"
        return f"array{size} of {_type(prop.get('items', {}))}"
    if kind == "number" and "minimum" in prop and "maximum" in prop:
        return f"number in [{prop['minimum']:g}, {prop['maximum']:g}]"
    return {"null": "null"}.get(kind, kind)


# ---------------------------------------------------------------------- helpers
def _fence(text: str, language: str) -> str:
    ticks = max([3] + [len(run) + 1 for run in re.findall(r"`{3,}", text)])
    return f"{'`' * ticks}{language}\n{text}\n{'`' * ticks}"


def _escape(text: str) -> str:
    """Plain text for a Markdown table cell, list item or paragraph: on one line, with the
    characters Markdown (or a TeX delimiter) would act on escaped outside `code spans`."""
    parts = re.split(r"(`[^`]*`)", " ".join(str(text).split()))
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"([\\|$*_\[\]>])", r"\\\1", parts[i]).replace("<", "&lt;")
    return "".join(parts)
