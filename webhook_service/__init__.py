"""Keeps an application's own MongoDB ``users`` collection correct against Clerk."""

from .app import create_app
from .config import Config, ConfigError

__all__ = ["Config", "ConfigError", "create_app"]
