"""``python -m webhook_service <command>``: the same commands as ``flask --app wsgi``."""

from flask import Flask
from flask.cli import FlaskGroup


def _load_app() -> Flask:
    from wsgi import app

    return app


cli = FlaskGroup(create_app=_load_app, add_default_commands=False, add_version_option=False)

if __name__ == "__main__":
    cli(prog_name="python -m webhook_service")
