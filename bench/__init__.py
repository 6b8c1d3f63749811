"""`python -m bench`: the benchmark table of the service, its ceiling and two baselines (see BENCHMARKS.md)."""
