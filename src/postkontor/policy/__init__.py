"""Pure policy decisions: relay rules, limits, throttling."""
