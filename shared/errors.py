"""The project's error tree. Driver errors are translated into these with ``raise ... from None``."""

from __future__ import annotations


class OutdialError(Exception):
    """Base of every error raised on purpose by outdial."""


class ConfigError(OutdialError):
    """A malformed environment variable or command-line setting; the message names it."""


class ValidationError(OutdialError, ValueError):
    """Input rejected on write. ``errors`` lists ``(field, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{name}: {message}" for name, message in self.errors))


class ServiceError(OutdialError):
    """A backing service (MongoDB, Redis, the provider) failed."""


class StoreError(ServiceError):
    """MongoDB refused or failed an operation."""


class NotFound(OutdialError):
    """The named document does not exist."""


class EmbeddedServiceError(ServiceError):
    """An embedded server (nx-27017, bundled redis-server) could not be started."""
