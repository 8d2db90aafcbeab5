"""Checks the figures share on the tables they are given."""

from __future__ import annotations

from typing import Sequence

import pandas as pd


def require_columns(table: pd.DataFrame, columns: Sequence[str], fix: str, name: str = "table") -> None:
    """Raise one ValueError naming the missing columns, the ones `table` has, and `fix`.

    Args:
        table: the DataFrame a figure was given.
        columns: the columns the figure reads.
        fix: what to pass instead, e.g. "pass the table metrics.calibration returns".
        name: what to call `table` in the message ("table", "history", ...).
    """
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the {name} (it has {list(table.columns)}); {fix}")
