"""New Relic clients: NerdGraph and the legacy Insights API, their limiter."""
