"""Feature definitions, their SQL and computation, the point-in-time store and its online view."""
