"""Sequence datasets built through the point-in-time store: builders, time splits, scaling."""
