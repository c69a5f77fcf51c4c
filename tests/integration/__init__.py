"""Integration tests: the store, the routes and the CLI against the real test database server.

The app runs in this process (Flask's test client and CLI runner), on SecantusDB or the
server ``TEST_MONGODB_URI`` names, with the fake Clerk over HTTP. No gunicorn, no
subprocess.
"""
