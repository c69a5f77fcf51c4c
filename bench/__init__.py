"""Benchmarks: this service against the few lines of Clerk's guide, side by side in one run.

``make bench`` (or ``python -m bench``) runs them; see ``bench/run.py`` for the options.
Only ratios measured in the same run mean anything on a shared, noisy machine.
"""
