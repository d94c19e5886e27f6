"""The shape of improv/ (issue 12): no module over 400 lines, no class over 250, no function or
constructor with more than 8 parameters (the typer commands in improv/commands/ aside), and
docs/DESIGN.md's module map names every module in improv/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p for p in (ROOT / "improv").rglob("*.py"))
MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_PARAMETERS = 400, 250, 8


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    return len([n for n in names if n.arg not in ("self", "cls")]) + bool(a.vararg) + bool(a.kwarg)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_shape(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ClassDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_CLASS_LINES, f"{path.name}: class {node.name} has {length} lines"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "commands" not in path.parts:
            n = _parameters(node)
            assert n <= MAX_PARAMETERS, f"{path.name}: {node.name}() takes {n} parameters"


def test_design_names_every_module() -> None:
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    missing = [str(p.relative_to(ROOT)) for p in MODULES
               if p.name != "__init__.py" and "commands" not in p.parts and f"improv/{p.name}" not in design]
    assert not missing, f"docs/DESIGN.md's module map lacks {missing}"
    listed = {line.split()[0] for line in design.splitlines() if line.startswith("improv/") and line.split()}
    gone = [name for name in listed if name.endswith(".py") and not (ROOT / name).is_file()]
    assert not gone, f"docs/DESIGN.md names modules that do not exist: {gone}"


# Each domain fact written once (issue 12): (what, regular expression, the one place it may appear)
ONCE = [
    ("note names", r"NOTE_NAMES\s*=", "improv/keys.py"),
    ("key profiles", r"(MAJOR|MINOR)_PROFILE\s*=\s*np\.array", "improv/keys.py"),
    ("scales", r"def scale_pitch_classes", "improv/keys.py"),
    ("onnxruntime session options", r"ort\.SessionOptions\(\)", "improv/model_step.py"),
    ("token names parsed", r"def split_name\b", "improv/tokens.py"),
    ("per-vocabulary token facts", r"^class TokenFacts", "improv/token_facts.py"),
    ("note pairing", r"^class NotePairer", "improv/pairing.py"),
    ("the timing-log CSV", r"planned_s,actual_s,kind", "improv/timing_log.py"),
    ("the private jackd", r'\["jackd"', "benchmarks/harness/jackd.py"),
    ("improv run as a subprocess", r'"improv\.cli", "run", \*chosen', "benchmarks/harness/improv_process.py"),
    ("the step-timing wrapper", r"^class \w*Timed\w*", "improv/context.py"),
    ("the scheduler's command type", r"^class Planned\b", "improv/scheduler.py"),
]


@pytest.mark.parametrize("what, pattern, home", ONCE, ids=[w for w, _, _ in ONCE])
def test_each_fact_is_written_once(what, pattern, home):
    import re

    rx = re.compile(pattern, re.MULTILINE)
    places = [str(p.relative_to(ROOT)) for folder in ("improv", "training", "benchmarks", "tests")
              for p in sorted((ROOT / folder).rglob("*.py")) if p.name != "test_shape.py" and rx.search(p.read_text())]
    assert places == [home], f"{what}: {places}"


def test_token_names_are_parsed_only_through_split_name():
    import re

    rx = re.compile(r'name\.partition\("_"\)|startswith\("(ON|OFF|SHIFT|VEL|P)_"\)|\.startswith\("(ON|OFF|P)_"')
    places = [str(p.relative_to(ROOT)) for folder in ("improv", "training")
              for p in sorted((ROOT / folder).rglob("*.py")) if rx.search(p.read_text())]
    assert places == [], places


def test_benchmarks_never_import_tests_and_nothing_sets_sys_path():
    import re

    rx = re.compile(r"^\s*(from tests[. ]|import tests)|sys\.path\.(insert|append)", re.MULTILINE)
    places = [str(p.relative_to(ROOT)) for folder in ("improv", "training", "benchmarks")
              for p in sorted((ROOT / folder).rglob("*.py")) if rx.search(p.read_text())]
    assert places == [], places
