"""Group `serving`: batch scoring with the champion (or the market fallback), the arbitrage scanner.

Nothing here imports Dagster; `defs/serving.py` wires it into assets.
"""
