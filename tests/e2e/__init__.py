"""End-to-end tests: the service as real processes run it.

gunicorn started with the Procfile's command, the dev server ``make run`` starts, and the
CLI and the Expo client run as subprocesses against them.
"""
