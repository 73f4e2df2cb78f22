"""Benchmarks (`make bench`).

Each module has main() printing figures as ratios against a baseline run in the same process."""
