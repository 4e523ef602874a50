"""``python -m advtrade``: the same as the ``advtrade`` command (:mod:`advtrade.experiments`)."""

from __future__ import annotations

from .experiments import main

if __name__ == "__main__":
    raise SystemExit(main())
