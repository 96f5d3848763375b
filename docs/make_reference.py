"""Write docs/reference/configuration.md from the typed schema (pipeline/config.py): every key of every stage, its
type, default, allowed values and the comment above it in the schema. The page is never edited by hand: a test
(tests/test_docs.py) fails when it differs from what this script writes.

    .venv/bin/python docs/make_reference.py            # rewrite the page
    .venv/bin/python docs/make_reference.py --check    # exit 1 when the page is out of date
"""

import ast
import dataclasses
import enum
import sys
import typing
from pathlib import Path

import pandas as pd
import yaml

from pipeline import config
from pipeline.bounds import Bounds

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "configuration.md"
SCHEMA = ROOT / "pipeline" / "config.py"
DEFAULT_EXPERIMENT = ROOT / "conf" / "experiment" / "default.yaml"
# Each stage's schema and the command it configures.
STAGES = [("Training", "python -m pipeline.train", config.Config),
          ("Forecast", "python -m pipeline.forecast", config.ForecastConfig),
          ("Evaluate", "python -m pipeline.evaluate", config.EvaluateConfig),
          ("Register", "python -m pipeline.register", config.RegisterConfig),
          ("Export", "python -m pipeline.export", config.ExportConfig),
          ("Serve", "python -m pipeline.serve", config.ServeConfig)]
# Sections shared by several stages are written once, under the first stage that has them.
SHARED = {config.TrackingConfig}


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment lines directly above the field in the schema's source, joined."""
    lines, found = source.splitlines(), {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                above, row = [], item.lineno - 2
                while row >= 0 and lines[row].strip().startswith("#"):
                    above.insert(0, lines[row].strip().lstrip("#").strip())
                    row -= 1
                inline = lines[item.lineno - 1].partition("  # ")[2].strip()
                found[(node.name, item.target.id)] = " ".join(above + ([inline] if inline else []))
    return found


def type_name(kind: typing.Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union and type(None) in args:
        return f"{type_name(next(a for a in args if a is not type(None)))} or null"
    if origin in (list, dict):
        return f"{origin.__name__} of {', '.join(type_name(a) for a in args)}"
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in kind)
    return "any" if kind is typing.Any else getattr(kind, "__name__", str(kind))


def default_of(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    value = getattr(value, "value", value)
    if value is None:
        return "null"
    return f"`{str(value).lower()}`" if isinstance(value, bool) else f"`{value}`"


def experiment_overrides() -> str:
    """What the default experiment sets on top of the schema, as key=value."""
    flat = pd.json_normalize(yaml.safe_load(DEFAULT_EXPERIMENT.read_text()), sep=".").iloc[0].to_dict()
    return ", ".join(f"`{key}={value}`" for key, value in flat.items())


def allowed(f: dataclasses.Field) -> str:
    check = f.metadata.get("check")
    if isinstance(check, Bounds):
        return str(check)
    # A check function's docstring says it: "data.freq: a pandas offset alias ...".
    return (check.__doc__ or "").strip().partition("\n")[0].partition(": ")[2] if check else ""


def rows(kind: type, prefix: str, comments: dict, written: set) -> list[str]:
    """One table row per key of `kind` (sections of their own for nested dataclasses, after it)."""
    out, nested = [], []
    hints = typing.get_type_hints(kind)
    for f in dataclasses.fields(kind):
        inner = typing.get_args(hints[f.name]) or (hints[f.name],)
        section = next((k for k in inner if dataclasses.is_dataclass(k)), None)
        if section is not None:
            nested.append((section, f"{prefix}{f.name}."))
            continue
        meaning = comments.get((kind.__name__, f.name), "").replace("|", "\\|")
        out.append(f"| `{prefix}{f.name}` | {type_name(hints[f.name])} | {default_of(f)} | {allowed(f)} | {meaning} |")
    table = ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |", *out] if out else []
    for section, name in nested:
        if section in SHARED and section in written:
            table += ["", f"`{name.rstrip('.')}.*`: as in training (below `{name.rstrip('.')}` there)."]
            continue
        written.add(section)
        doc = (section.__doc__ or "").strip()
        intro = [] if doc.startswith(section.__name__ + "(") else [doc.replace("\n    ", " "), ""]
        table += ["", f"### `{name.rstrip('.')}`", "", *intro, *rows(section, name, comments, written)]
    return table


def render() -> str:
    comments = field_comments(SCHEMA.read_text())
    page = ["# Configuration reference", "",
            "Every key of every stage, generated from the typed schema (`pipeline/config.py`) by "
            "`docs/make_reference.py`: the type, the default, the values allowed (checked when the command starts, "
            "before any data is read) and the schema's own comment. Set a key on the command line "
            "(`model.hidden_size=32`) or in a YAML file under `conf/`; a misspelled key or a value of the wrong "
            "type stops the command in one line.", ""]
    written: set = set()
    for title, command, schema in STAGES:
        page += [f"## {title}", "", f"`{command} KEY=VALUE ...`", ""]
        if schema is config.Config:
            page += [f"The defaults below are the schema's; `conf/config.yaml` then composes the default experiment "
                     f"(`conf/experiment/default.yaml`) on top, which sets {experiment_overrides()}. "
                     f"`experiment=NAME` replaces it, `'~experiment'` drops it.", ""]
        page += [*rows(schema, "", comments, written), ""]
    return "\n".join(page).rstrip("\n") + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if PAGE.exists() and PAGE.read_text() == text else 1)
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
