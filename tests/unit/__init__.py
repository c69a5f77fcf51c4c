"""Unit tests: fast, no database server and no processes.

Pure functions (parsing, mapping, configuration, the index planner, signatures, tokens),
the delivery handler on mongomock, and the package's layout. The JWKS tests in
test_tokens.py talk to the fake Clerk over loopback HTTP, in a thread of this process.
"""
