"""``python -m advtrade``: the same as the ``advtrade`` command (:mod:`advtrade.experiments`)."""

from __future__ import annotations

from .experiments._cli import entry

if __name__ == "__main__":
    entry()
