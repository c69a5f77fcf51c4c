"""Errors the store raises; callers answer 503 for them so that Svix retries."""


class StoreUnavailable(Exception):
    """The database did not answer in time or refused the write. Retrying later is safe."""


class UsernameConflict(StoreUnavailable):
    """A username clash that did not settle within a few attempts; a retry will converge."""


class ForeignIndexRefused(StoreUnavailable):
    """A unique index the service does not own refused a write (e.g. xClone's unique
    ``email_1``). Retrying is right: Svix redelivers once ``init-db --migrate`` ran."""

    def __init__(self, index: str) -> None:
        super().__init__(
            f"write refused by unique index users.{index}, which contradicts the service's rules; "
            "run `flask --app wsgi init-db --migrate`"
        )
        self.index = index
