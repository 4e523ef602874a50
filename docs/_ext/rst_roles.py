"""Griffe extension for the docs build: reST roles, and docstrings of overriding methods.

advtrade's docstrings are prose with Sphinx-style cross-reference roles (``:class:`~advtrade.PGD```,
``:func:`evaluate```, ``:mod:`advtrade.synthetic_theory```). mkdocstrings renders docstrings as
Markdown, where those roles would show up verbatim; this extension rewrites each role into an
*optional* autorefs cross-reference: a link when the target is documented, plain code otherwise
(never a build warning). A leading ``~`` shows only the last component, as in Sphinx.

A method that overrides a documented one without a docstring of its own (``PGD.perturb``,
``LinfBall.ascent_direction``, a callback's ``on_epoch_end``) gets the base method's docstring,
as ``inspect.getdoc`` would give it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`<>]+?)`")


def _candidates(target: str, obj: griffe.Object) -> list[str]:
    """Absolute identifiers to try for ``target`` written inside ``obj``'s docstring."""
    if target.startswith("advtrade"):
        return [target]
    out = []
    scope: griffe.Object | None = obj
    while scope is not None:  # the object itself, its class, its module, the package
        out.append(f"{scope.path}.{target}")
        scope = scope.parent
    return out


def rewrite(text: str, obj: griffe.Object) -> str:
    """``text`` with every reST role replaced by an optional autoref."""

    def sub(match: re.Match[str]) -> str:
        tilde, target = match.group(1), match.group(2).strip().rstrip("()")
        shown = target.rsplit(".", 1)[-1] if tilde else target
        # The first candidate that names a known object wins; otherwise the first one (unlinked).
        ids = _candidates(target, obj)
        identifier = next((i for i in ids if _known(obj, i)), ids[0])
        return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'

    return _ROLE.sub(sub, text)


def _known(obj: griffe.Object, identifier: str) -> bool:
    try:
        obj.modules_collection.get_member(identifier)  # type: ignore[union-attr]
    except Exception:
        return False
    return True


class RstRoles(griffe.Extension):
    """Rewrite reST roles in every docstring once the whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        objects = _walk(pkg)
        for obj in objects:
            if obj.is_class:
                _inherit_docstrings(obj)  # type: ignore[arg-type]
        for obj in objects:
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj.docstring.value, obj)


def _inherit_docstrings(cls: griffe.Class) -> None:
    """Give each undocumented method the docstring of the nearest base that documents it."""
    try:
        bases = cls.mro()
    except Exception:  # an unresolvable base (outside the package): nothing to inherit
        return
    for name, member in cls.members.items():
        if member.is_alias or not member.is_function or member.docstring is not None:
            continue
        for base in bases:
            inherited = base.members.get(name)
            if inherited is not None and not inherited.is_alias and inherited.docstring:
                member.docstring = griffe.Docstring(
                    inherited.docstring.value, parent=member, lineno=inherited.docstring.lineno
                )
                break


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    out = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            out.extend(_walk(member))  # type: ignore[arg-type]
    return out
