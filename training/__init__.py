"""Offline training of the attention networks: data, splits, losses, the loop, metrics, reports, CLI."""
