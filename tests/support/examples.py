"""The worked example maps under ``docs/examples/``, which the tests run the service with."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
ORGANIZATION_FIELDS = EXAMPLES / "organization-fields.toml"
SAAS_USER_FIELDS = EXAMPLES / "saas-user-fields.toml"
