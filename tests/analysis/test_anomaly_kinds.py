"""The README lists every anomaly kind the code can emit, and no other.

A kind is a public name (users filter the ``anomalies`` table on it), and
the code is its only source: string literals spread over ``analysis/`` and
``capture/``. They are found here from the source's syntax tree, so a new
kind fails this test until the README's ``### anomalies`` part says what
it means.

What makes an anomaly, for the finder:

- a class whose name holds "Anomaly" with a ``kind`` field
  (``AnomalyRecord``, ``AnomalySeen``, ``StreamAnomaly``, ...), called
  directly or built as ``_new(Class, (...))``;
- a function whose name holds "anomaly" with a ``kind`` parameter
  (``_anomaly``, ``_add_anomaly``, ``tcp_anomaly``), and any function that
  hands its own ``kind`` parameter on to one of these (``_clear_text``).

At each call the kind argument, by position or keyword, is a literal, a
choice between literals (``a if c else b``), or a name assigned such a
value in the function or the module; or it hands on a kind made elsewhere
(the caller's own ``kind`` parameter, an event's ``.kind``, ``*row``).
Anything else fails the test, naming the line, rather than be skipped.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import analysis

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PACKAGES = ("analysis", "capture")
KIND_TABLE_HEADER = "| kind | what it means |"
_KIND_ROW = re.compile(r"^\| `([a-z0-9_]+)` \| (\S.*\S) \|$")


@dataclass
class Found:
    kinds: dict[str, list[str]] = field(default_factory=dict)  # kind -> sites
    unresolved: list[str] = field(default_factory=list)  # sites not understood


def emitted_kinds(sources: Iterable[tuple[str, str]]) -> Found:
    """The anomaly kinds made in ``sources``, (name, Python source) pairs."""
    trees = {name: ast.parse(text, name) for name, text in sources}
    classes = _maker_classes(trees.values())
    functions = _maker_functions(trees, classes)
    found = Found()
    for name, tree in trees.items():
        for fn, call in _calls(tree):
            index = _maker_index(call, name, classes, functions)
            if index is None:
                continue
            site = f"{name}:{call.lineno}"
            arg = _argument(call, index, classes)
            if arg is _FORWARDED:
                continue
            kinds = _strings(arg, fn, tree, functions.get(name, {}))
            if kinds is None:
                found.unresolved.append(f"{site}: {ast.unparse(call)[:100]}")
                continue
            for kind in kinds:
                found.kinds.setdefault(kind, []).append(site)
    return found


def project_sources() -> Iterator[tuple[str, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), path.read_text()


def readme_kinds(text: str) -> list[str]:
    """The kinds in the ``| kind | what it means |`` tables of the README's
    ``### anomalies`` part, in order."""
    start = text.index("\n### anomalies\n")
    end = text.find("\n### ", start + 1)
    part = text[start : end if end >= 0 else len(text)].splitlines()
    kinds: list[str] = []
    in_table = False
    for line in part:
        if line == KIND_TABLE_HEADER:
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|---"):
            row = _KIND_ROW.match(line)
            assert row is not None, f"not a kind row: {line}"
            kinds.append(row.group(1))
    return kinds


def differences(emitted: Iterable[str], listed: list[str]) -> list[str]:
    """What keeps the README's list from being exactly the emitted kinds."""
    made, shown = set(emitted), set(listed)
    twice = {kind for kind in listed if listed.count(kind) > 1}
    return (
        [f"{kind}: emitted, not in the README" for kind in sorted(made - shown)]
        + [f"{kind}: in the README, never emitted" for kind in sorted(shown - made)]
        + [f"{kind}: listed twice" for kind in sorted(twice)]
    )


# -- the finder --------------------------------------------------------------

_FORWARDED = ast.Constant(value=None)  # a kind made elsewhere, handed on


def _maker_classes(trees: Iterable[ast.Module]) -> dict[str, int]:
    """Class name -> position of its ``kind`` field."""
    classes: dict[str, int] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and "anomaly" in node.name.lower():
                names = [
                    s.target.id
                    for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                ]
                if "kind" in names:
                    _put(classes, node.name, names.index("kind"))
    return classes


def _parameters(fn: ast.FunctionDef) -> list[str]:
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def _maker_functions(
    trees: dict[str, ast.Module], classes: dict[str, int]
) -> dict[str, dict[str, int]]:
    """Module -> function name -> position of its ``kind`` parameter."""
    functions: dict[str, dict[str, int]] = {name: {} for name in trees}
    candidates = [
        (name, fn)
        for name, tree in trees.items()
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef) and "kind" in _parameters(fn)
    ]
    for name, fn in candidates:
        if "anomaly" in fn.name.lower():
            _put(functions[name], fn.name, _parameters(fn).index("kind"))
    changed = True
    while changed:  # those that hand their kind on to a maker are makers
        changed = False
        for name, fn in candidates:
            if fn.name in functions[name]:
                continue
            for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
                index = _maker_index(call, name, classes, functions)
                arg = None if index is None else _argument(call, index, classes)
                if isinstance(arg, ast.Name) and arg.id == "kind":
                    _put(functions[name], fn.name, _parameters(fn).index("kind"))
                    changed = True
                    break
    return functions


def _put(table: dict[str, int], name: str, index: int) -> None:
    assert table.get(name, index) == index, f"{name} takes its kind in two places"
    table[name] = index


def _calls(tree: ast.Module) -> Iterator[tuple[ast.FunctionDef | None, ast.Call]]:
    """Every call, with the innermost function it is in."""

    def walk(
        node: ast.AST, fn: ast.FunctionDef | None
    ) -> Iterator[tuple[ast.FunctionDef | None, ast.Call]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call):
                yield fn, child
            inner = child if isinstance(child, ast.FunctionDef) else fn
            yield from walk(child, inner)

    yield from walk(tree, None)


def _callee(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _maker_index(
    call: ast.Call,
    module: str,
    classes: dict[str, int],
    functions: dict[str, dict[str, int]],
) -> int | None:
    name = _callee(call)
    if name is None:
        return None
    built = _built_class(call, classes)
    if built is not None:
        return classes[built]
    if name in classes:
        return classes[name]
    if name in functions[module]:
        return functions[module][name]
    elsewhere = {t[name] for t in functions.values() if name in t}
    assert len(elsewhere) <= 1, f"{module}:{call.lineno}: which {name}?"
    return elsewhere.pop() if elsewhere else None


def _built_class(call: ast.Call, classes: dict[str, int]) -> str | None:
    """``_new(AnomalySeen, (ts, kind, detail))``: the class so built."""
    if len(call.args) == 2 and isinstance(call.args[1], ast.Tuple):
        cls = call.args[0]
        if isinstance(cls, ast.Name) and cls.id in classes:
            return cls.id
    return None


def _argument(call: ast.Call, index: int, classes: dict[str, int]) -> ast.expr:
    for keyword in call.keywords:
        if keyword.arg == "kind":
            return keyword.value
        if keyword.arg is None:  # **mapping
            return _FORWARDED
    args = call.args
    built = _built_class(call, classes)
    if built is not None:
        assert isinstance(args[1], ast.Tuple)  # see _built_class
        args = args[1].elts
    for i, arg in enumerate(args):
        if isinstance(arg, ast.Starred):
            return _FORWARDED  # AnomalyRecord(*row): one read back
        if i == index:
            return arg
    return call  # too few arguments: not a kind the finder can read


def _strings(
    node: ast.expr,
    fn: ast.FunctionDef | None,
    tree: ast.Module,
    makers: dict[str, int],
) -> set[str] | None:
    """The kinds ``node`` can be; empty if it hands one on; None if unknown."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        body = _strings(node.body, fn, tree, makers)
        orelse = _strings(node.orelse, fn, tree, makers)
        return None if body is None or orelse is None else body | orelse
    if isinstance(node, ast.Attribute) and node.attr == "kind":
        return set()  # an anomaly's kind, counted where that anomaly was made
    if not isinstance(node, ast.Name):
        return None
    if fn is not None and node.id in _parameters(fn):
        forwarded = node.id == "kind" and fn.name in makers
        return set() if forwarded else None
    for scope in (fn, tree):
        if scope is None:
            continue
        values = [value for target, value in _assignments(scope) if target == node.id]
        if values:
            kinds: set[str] = set()
            for value in values:
                more = _strings(value, None, tree, makers)
                if more is None:
                    return None
                kinds |= more
            return kinds
    return None


def _assignments(scope: ast.AST) -> Iterator[tuple[str, ast.expr]]:
    """(name, value) of every ``name = value`` and ``name: T = value``."""
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    yield target.id, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            # (a bare annotation, ``kind: str``, assigns nothing)
            target = node.target
            yield (target.id if isinstance(target, ast.Name) else ""), node.value


# -- the tests ---------------------------------------------------------------


def test_the_readme_lists_exactly_the_anomaly_kinds_the_code_emits() -> None:
    found = emitted_kinds(project_sources())
    unread = "\n".join(found.unresolved)
    assert not unread, f"kinds the finder cannot read (teach it):\n{unread}"
    problems = "\n".join(differences(found.kinds, readme_kinds(README.read_text())))
    assert not problems, f"README.md's anomaly kinds:\n{problems}"


def test_the_finder_sees_the_kinds_the_projects_captures_produce() -> None:
    # Not a proof that nothing is missed, but a check on the finder with
    # kinds the code really emitted.
    found = emitted_kinds(project_sources())
    captures = sorted((ROOT / "pcaps").rglob("*.pcap"))
    tables = analysis.read_captures(captures)
    seen = set(tables.anomalies["kind"])
    assert len(seen) >= 5
    assert seen - set(found.kinds) == set()


FAKE = """
KIND = "from_a_constant"
OTHER: Final = "annotated_constant"

class OddAnomaly(NamedTuple):
    ts: int
    kind: str
    detail: str

class Builder:
    def _add_anomaly(self, ts, kind, detail):
        self.rows.append(OddAnomaly(ts, kind, detail))

    def _say(self, out, kind, what):
        self._add_anomaly(
            0,
            kind,
            what,
        )

    def run(self, flag):
        self._add_anomaly(1, "a_literal", "x")
        self._add_anomaly(
            2,
            (
                "split_over"
                "_lines"
            ),
            "x",
        )
        self._add_anomaly(3, detail="x", kind="by_keyword")
        chosen = "one_way" if flag else "other_way"
        self._add_anomaly(4, chosen, "x")
        self._say([], "through_a_helper", "x")
        self._add_anomaly(5, KIND, "x")
        self._add_anomaly(5, OTHER, "x")
        self.rows.append(OddAnomaly(6, "made_directly", "x"))
        self.rows.append(_new(OddAnomaly, (7, "made_by_new", "x")))
        self._add_anomaly(8, event.kind, "x")
        self.rows.append(OddAnomaly(*row))
"""


def test_the_finder_reads_each_way_a_kind_is_given() -> None:
    found = emitted_kinds([("fake.py", FAKE)])
    assert found.unresolved == []
    assert set(found.kinds) == {
        "from_a_constant",
        "annotated_constant",
        "a_literal",
        "split_over_lines",
        "by_keyword",
        "one_way",
        "other_way",
        "through_a_helper",
        "made_directly",
        "made_by_new",
    }


def test_the_finder_names_a_kind_it_cannot_read() -> None:
    source = FAKE + "\ndef later(b):\n    b._add_anomaly(9, compute(), 'x')\n"
    found = emitted_kinds([("fake.py", source)])
    assert len(found.unresolved) == 1
    assert found.unresolved[0].startswith("fake.py:")


def test_a_missing_extra_or_repeated_kind_is_reported() -> None:
    rows = ["|---|---|", "| `a` | one |", "| `b` | two |", "| `b` | two |"]
    table = "\n".join([KIND_TABLE_HEADER, *rows])
    readme = f"x\n### anomalies\n\n{table}\n\n### alerts\n\n{table}\n"
    listed = readme_kinds(readme)
    assert listed == ["a", "b", "b"]
    assert differences({"a", "d"}, listed) == [
        "d: emitted, not in the README",
        "b: in the README, never emitted",
        "b: listed twice",
    ]
