"""Reliability suites: faults, stepdowns, lost replies, storms, convergence and fuzzing.

What they prove, their sizes and the knobs that make them larger are in
docs/reliability.md.
"""
