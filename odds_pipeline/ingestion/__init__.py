"""The canonical store and its loads, the ingest driver, and one adapter per source format."""
