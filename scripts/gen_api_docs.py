"""Generate the SDK's API reference, `docs/api/<module>.md`, from docstrings and signatures.

    python scripts/gen_api_docs.py [OUT_DIR]        (default: docs/api)

Only `inspect` is used, on the public names of each module: its `__all__`, or, for a module
without one, the names it defines itself. The output depends on nothing but the source, so a
test regenerates it and compares (tests/examples/test_api_docs.py): after changing a public
docstring or signature, run this script and commit docs/api with the change.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

MODULES = [
    "dtm",
    "dtm.client",
    "dtm.barrier",
    "dtm.workflow",
    "dtm.xa",
    "dtm.xa.aio",
    "dtm.web",
    "dtm.web.grpc",
    "dtm.errors",
]
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "api"


class _Annotation(str):
    """A string annotation (the modules use `from __future__ import annotations`) that
    `inspect` prints as written instead of quoted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        ]
    return sorted(names, key=lambda n: (n.startswith("_"), n.lower()))


def signature(obj: Callable[..., Any], *, bound: bool = False) -> str | None:
    """The signature with annotations as written in the source, without the first parameter
    (`self`, `cls`) when `bound`; None when there is none."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if bound:
        sig = sig.replace(parameters=list(sig.parameters.values())[1:])

    def plain(annotation: Any) -> Any:
        return _Annotation(annotation) if isinstance(annotation, str) else annotation

    params = [p.replace(annotation=plain(p.annotation)) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=plain(sig.return_annotation)))


def doc_of(obj: Any) -> str:
    doc = inspect.getdoc(obj) if not isinstance(obj, str | int | float | tuple | dict) else None
    return doc.strip() if doc else ""


def _own_doc(cls: type, name: str, member: Any) -> str:
    """A member's docstring, unless it is only the one inherited from `object` or a builtin
    base (that would repeat the same text on every class)."""
    for base in cls.__mro__:
        if name in vars(base):
            if base.__module__ == "builtins":
                return ""
            break
    return doc_of(member)


def class_members(cls: type) -> Iterator[tuple[str, str, str]]:
    """(heading, signature, doc) of the public methods and properties a class defines or
    inherits from the package (not from builtins)."""
    seen: set[str] = set()
    for base in cls.__mro__:
        if base.__module__ == "builtins" or not base.__module__.startswith("dtm"):
            continue
        for name, raw in vars(base).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            if isinstance(raw, property):
                yield name, "", _own_doc(cls, name, raw)
            elif isinstance(raw, staticmethod | classmethod):
                func = raw.__func__
                sig = signature(func, bound=isinstance(raw, classmethod))
                yield name, sig or "", doc_of(func)
            elif inspect.isfunction(raw):
                yield name, signature(raw, bound=True) or "", doc_of(raw)


def fields_of(cls: type) -> list[str]:
    """The fields of a dataclass or msgspec Struct, as `name: type`."""
    annotations: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        annotations.update(vars(base).get("__annotations__", {}))
    names: list[str] = list(getattr(cls, "__struct_fields__", ()))
    names += list(getattr(cls, "__dataclass_fields__", {}))
    return [f"{name}: {annotations.get(name, 'Any')}" for name in names]


def render_class(name: str, cls: type) -> list[str]:
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    head = f"class {name}" + (f"({', '.join(bases)})" if bases else "")
    lines = [f"### `{name}`", "", "```python", head]
    sig = signature(cls)
    if sig and not issubclass(cls, BaseException) and not issubclass(cls, enum.Enum):
        lines.append(f"{name}{sig}")
    lines += ["```", ""]
    if doc := doc_of(cls):
        lines += [doc, ""]
    if fields := fields_of(cls):
        lines += ["Fields:", ""] + [f"- `{field}`" for field in fields] + [""]
    for member, sig, doc in class_members(cls):
        lines += [f"#### `{name}.{member}{sig}`", ""]
        if doc:
            lines += [doc, ""]
    return lines


def render_name(module: ModuleType, name: str) -> list[str]:
    obj = getattr(module, name)
    if inspect.isclass(obj):
        return render_class(name, obj)
    if callable(obj) and (sig := signature(obj)) is not None:
        lines = [f"### `{name}`", "", "```python", f"def {name}{sig}", "```", ""]
        if doc := doc_of(obj):
            lines += [doc, ""]
        return lines
    lines = [f"### `{name}`", ""]
    if isinstance(obj, str | int | float):
        lines += [f"`{name} = {obj!r}`", ""]
    elif isinstance(obj, tuple | frozenset | dict | list):
        lines += [f"`{name}`: {type(obj).__name__} of {len(obj)}", ""]
    else:
        lines += [f"`{name}`: `{obj!r}`", ""]
    return lines


def render(module_name: str) -> str:
    module = importlib.import_module(module_name)
    lines = [f"# `{module_name}`", ""]
    if doc := doc_of(module):
        lines += [doc, ""]
    names = public_names(module)
    if names:
        lines += ["## Public names", ""]
        lines += [f"- [`{n}`](#{n.lower().strip('_')})" for n in names] + [""]
    for name in names:
        lines += render_name(module, name)
    return "\n".join(lines).rstrip() + "\n"


def render_index() -> str:
    lines = [
        "# API reference",
        "",
        "Generated by `scripts/gen_api_docs.py` from the docstrings; do not edit by hand.",
        "",
    ]
    for name in MODULES:
        summary = doc_of(importlib.import_module(name)).split("\n\n")[0].replace("\n", " ")
        lines.append(f"- [`{name}`]({name}.md): {summary}")
    return "\n".join(lines) + "\n"


def generate() -> dict[str, str]:
    """File name -> content of every page."""
    pages = {f"{name}.md": render(name) for name in MODULES}
    pages["index.md"] = render_index()
    return pages


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    for filename, text in generate().items():
        (out / filename).write_text(text)
    print(f"wrote {len(MODULES) + 1} pages to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
