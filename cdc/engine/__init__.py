"""The running connector: the main loop, its helpers, snapshots and replays."""
