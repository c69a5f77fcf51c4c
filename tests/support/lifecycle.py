"""Servers the tests run in the background, each usable as a context manager."""

from __future__ import annotations

from typing import Self


class Running:
    """``with Server(...) as server:`` starts it and stops it however the block ends."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
