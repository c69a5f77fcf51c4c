"""Errors the store raises; callers answer 503 for them so that Svix retries."""


class StoreUnavailable(Exception):
    """The database did not answer in time or refused the write. Retrying later is safe."""


class UsernameConflict(StoreUnavailable):
    """A username clash that did not settle within a few attempts; a retry will converge."""
