"""Benchmarks: each script prints ratios measured within one run (`make bench`)."""
