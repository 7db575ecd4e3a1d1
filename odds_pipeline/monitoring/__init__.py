"""Group `monitoring`: drift statistics (PSI, KS, Wasserstein), outcome monitoring, alert sinks.

Nothing here imports Dagster; `defs/monitoring.py` wires it into assets and sensors.
"""
