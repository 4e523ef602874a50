"""``python -m advtrade``: the same as the ``advtrade`` command (see :mod:`advtrade.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
