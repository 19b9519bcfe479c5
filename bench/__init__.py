"""Benchmarks of minerfleet: each one compares two things side by side in one run.

Run them all with ``python -m bench.run`` (``make bench``), one with ``python -m bench.<name>``;
``--quick`` for a smoke run. Results go to ``bench/results/`` (git-ignored). See ``bench/README.md``.
"""
