"""The shared test harness: what the tests under ``tests/`` and the benchmarks in ``bench/`` use.

- ``mongo_server``: a real MongoDB wire-protocol test server (SecantusDB on a free port, or
  ``TEST_MONGODB_URI``), with the fail points and stepdowns MongoDB's driver tests use.
- ``fake_clerk``: Clerk's Backend API over HTTP (the local Clerk plus fault injection), and
  builders of Clerk users and webhook events; ``clerk_history``: generated Clerk histories.
- ``signing``: Svix signatures; ``tokens_util``: Clerk session tokens and key pairs.
- ``processes``: the service started as production starts it (the Procfile's gunicorn);
  ``lifecycle``: start/stop plumbing.
- ``helpers``: small shared helpers; ``hygiene``: leak checks of logs and responses;
  ``mongomock_compat``: the mongomock shims the unit tests need; ``xclone``: a database as
  xClone leaves it; ``locks``: reading the dependency locks.

The pytest fixtures built on these are in ``tests/conftest.py``. Nothing here is a test:
``bench/`` imports it too, so it must not import pytest fixtures or test modules.
"""
