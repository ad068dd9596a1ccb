"""`python -m bench`: touchflow's performance benchmark (issue 8). See docs/benchmarks.md."""
