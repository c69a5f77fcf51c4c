"""Clerk users, mirrored into the app's ``users`` collection."""
