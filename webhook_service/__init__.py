"""Keeps an application's own MongoDB collections correct against Clerk.

The package imports nothing here: ``app.create_app`` builds the web app, ``config.Config``
reads the environment, and the pure modules (``events``, ``fieldmap``, ``schema``, the
resources' mappings) can be used without Flask or a database.
"""
