"""The Dagster layer: thin definitions that call the pure domain modules, one module per group."""
