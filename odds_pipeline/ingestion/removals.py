"""Withdrawn quotes: when a book takes a price down, the quote ends at that instant.

The Odds API change logs mark a withdrawal as a `removed` row. Dropping those rows let a
withdrawn price live on until its TTL (about 16% of h2h arbitrage openings in one league's
change log had a leg already withdrawn). The store keeps them in `quote_removals`; the
arbitrage scanner ends a quote at its removal. ``point`` NULL withdraws the outcome at
every line (the change logs never carry one on a removal).
"""

QUOTE_REMOVALS_TABLE = "quote_removals"
QUOTE_REMOVALS_SQL = f"""
CREATE TABLE IF NOT EXISTS {QUOTE_REMOVALS_TABLE} (
    event_id VARCHAR NOT NULL,
    bookmaker VARCHAR NOT NULL,
    market VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    point DOUBLE,
    removed_at TIMESTAMPTZ NOT NULL,
    source VARCHAR,
    load_id VARCHAR
);
"""
