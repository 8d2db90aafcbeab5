"""Fixtures several test modules share (plain helpers are in helpers.py)."""

import pandas as pd
import pytest
from helpers import tiny_rows

from workbench.tasks import load_task


@pytest.fixture(scope="module")
def csv_task(tmp_path_factory):
    """A 3-class CSV (30 rows per class) and the task loaded from it (80/10/10 split)."""
    path = tmp_path_factory.mktemp("task") / "tiny.csv"
    pd.DataFrame(tiny_rows(30)).to_csv(path, index=False)
    return path, load_task(path)
