"""Durable state: checkpoints, heartbeats, snapshot progress and dead letters."""
