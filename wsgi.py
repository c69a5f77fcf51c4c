"""The WSGI entry point: ``gunicorn wsgi:app`` (see Procfile) and ``flask --app wsgi``."""

import sys

from webhook_service.app import create_app
from webhook_service.config import Config, ConfigError
from webhook_service.logs import configure_logging

try:
    _config = Config.from_env()
except ConfigError as exc:
    print(f"configuration error: {exc}", file=sys.stderr)
    raise SystemExit(1) from None

configure_logging(_config.log_format)
app = create_app(_config)
