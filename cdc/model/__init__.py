"""Pure values every stage shares: events, positions, GTID sets, versions, checkpoints."""
