"""Group `registry`: quality gates (statistics on held-out rows), promotion and aliases in MLflow.

Home of: gate statistics (`gates`), the promotion decision and its audit rows (`promotion`).
Nothing here imports Dagster; `defs/registry.py` wires it into checks and assets.
"""
