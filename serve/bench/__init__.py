"""``python -m serve bench``: throughput tables, concurrency sweeps, roofline and A/B of profiles."""
