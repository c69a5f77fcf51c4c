"""The project's tooling: dependency locks, the audit, the benchmark harness, and the
metrics the Prometheus alert rules rely on."""
