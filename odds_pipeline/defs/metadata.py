"""Helpers for what assets show in the Dagster UI."""

import pandas as pd


def markdown_table(frame: pd.DataFrame, columns: list[str] | None = None, rows: int = 10) -> str:
    """The first `rows` rows as a markdown table (a preview in asset metadata)."""
    if frame.empty:
        return "_no rows_"
    columns = list(frame.columns) if columns is None else columns
    head = frame[columns].head(rows).astype(str)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in head.itertuples(index=False)]
    return "\n".join(lines)
