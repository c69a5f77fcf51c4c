"""Clerk organizations, mirrored into the app's organizations collection when the app
declares them (``ORGANIZATION_FIELDS_FILE``)."""
