"""The benchmarks (BENCHMARKS.md): scripts run from the repository, `make bench`."""
