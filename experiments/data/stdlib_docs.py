"""An offline text corpus: the documentation of Python's own standard library.

One document per public standard-library module: its docstring followed by the docstrings of
its public classes and functions, read from the module's source with :mod:`ast` (nothing is
imported, so no module runs: ``this`` prints nothing, ``antigravity`` opens no browser).
Modules without Python source (built into the interpreter or compiled) are left out.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

#: modules left out: test suites, IDLE, demos, and the packaging of pip itself
SKIP = ("test", "idlelib", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "this",
        "antigravity")


def module_doc(path: str | Path) -> str:
    """The module docstring of the Python file ``path`` followed by those of its top-level
    public classes, functions and their public methods (``""`` when it has none).

    Examples::

        >>> import json, pathlib
        >>> doc = module_doc(pathlib.Path(json.__file__))
        >>> doc.startswith("JSON (JavaScript Object Notation)")   # the module's docstring
        True
        >>> "Serialize ``obj`` to a JSON formatted ``str``" in doc   # json.dumps's
        True
    """
    tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    parts = [ast.get_docstring(tree) or ""]
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and not node.name.startswith("_"):
            parts.append(ast.get_docstring(node) or "")
            if isinstance(node, ast.ClassDef):
                parts += [ast.get_docstring(item) or "" for item in node.body
                          if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                          and not item.name.startswith("_")]
    return "\n\n".join(p for p in parts if p)


def load_stdlib_docs(max_docs: int | None = None, min_chars: int = 200) -> tuple[list[str],
                                                                                  list[str]]:
    """``(names, docs)``: the public standard-library modules (sorted by name) whose
    documentation (:func:`module_doc`) has at least ``min_chars`` characters; at most
    ``max_docs`` of them (the first ones by name).

    Examples::

        >>> names, docs = load_stdlib_docs(max_docs=3)
        >>> len(names) == len(docs) == 3 and all(len(d) >= 200 for d in docs)
        True
    """
    names: list[str] = []
    docs: list[str] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in SKIP:
            continue
        spec = importlib.util.find_spec(name) if name not in sys.modules else \
            getattr(sys.modules[name], "__spec__", None)
        origin = getattr(spec, "origin", None)
        if not origin or not origin.endswith(".py"):
            continue
        try:
            doc = module_doc(origin)
        except (OSError, SyntaxError, ValueError):
            continue
        if len(doc) >= min_chars:
            names.append(name)
            docs.append(doc)
            if max_docs is not None and len(names) >= max_docs:
                break
    return names, docs
