"""Benchmarks of the in-task batch engine: ``python -m bench`` (see ``bench/README.md``)."""
