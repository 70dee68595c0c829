"""The project's error tree. Driver errors are translated into these with ``raise ... from None``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.domain.reasons import Reason, because


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


class Conflict(OutdialError):
    """The request is valid but the document's current state forbids it (e.g. resuming a cancelled batch)."""


class EmbeddedServiceError(ServiceError):
    """An embedded server (nx-27017, bundled redis-server) could not be started."""


# -- provider (Retell) ----------------------------------------------------------------------------


class ProviderError(ServiceError):
    """The provider refused or failed a request.

    :param message: the provider's message (its ``message`` field) or a description of the failure.
    :param status: HTTP status, None when no response arrived.
    :param endpoint: which call failed (``create_phone_call``, ``get_call``, ...).
    ``retryable`` says whether sending the same request again later may succeed.
    """

    #: Whether the same request may succeed if sent again later.
    retryable: bool = False
    #: Short name used in metrics and logs.
    kind: str = "provider_error"

    def __init__(self, message: str, *, status: int | None = None, endpoint: str | None = None) -> None:
        self.message = message
        self.status = status
        self.endpoint = endpoint
        where = f"{endpoint}: " if endpoint else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{where}{code}{message}")


class ProviderRejected(ProviderError):
    """The request is invalid (400, 422 validation, other 4xx): sending it again will not help."""

    kind = "rejected"


class InvalidDestination(ProviderRejected):
    """The create was refused because of ``to_number``: the contact's number cannot be dialed."""

    kind = "invalid_destination"


class CallerIdRejected(ProviderRejected):
    """The create was refused because of ``from_number``: the caller id is malformed, unknown to the
    workspace or not allowed. No contact can fix it: the batch is held."""

    kind = "caller_id_rejected"


class AgentNotFound(ProviderRejected):
    """The create named an agent the workspace does not have. No contact can fix it: the batch is held."""

    kind = "agent_not_found"


class ProviderAuthError(ProviderError):
    """401: the API key is missing or wrong."""

    kind = "auth"


class PaymentRequired(ProviderError):
    """402: the provider account has no valid payment method or its trial ended."""

    kind = "payment_required"


class CallNotFound(ProviderError):
    """404, or 422 whose message says not found: no such call under this API key."""

    kind = "not_found"


class RateLimited(ProviderError):
    """429. ``retry_after_s`` is the server's ``retry-after``/``retry-after-ms`` (None if it sent neither)."""

    retryable = True
    kind = "rate_limited"

    def __init__(self, message: str, *, status: int | None = 429, endpoint: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message, status=status, endpoint=endpoint)
        self.retry_after_s = retry_after_s


class ProviderUnavailable(ProviderError):
    """5xx, 408/409, a connection that could not be made or broke, or an unreadable answer."""

    retryable = True
    kind = "unavailable"


class ProviderTimeout(ProviderError):
    """No answer within the request's timeout (for a request that is safe to send again)."""

    retryable = True
    kind = "timeout"


class CreateOutcomeUnknown(ProviderError):
    """A create-phone-call whose result is unknown: the request was sent, the answer was lost.

    The call may exist, so it is not ``retryable``: the attempt is never dialed anew. The client raises
    it once its own sends with the idempotency key stayed ambiguous; the dial step then hands the
    attempt to the reconcile step (:mod:`shared.pipeline.reconcile`), which sends the same create again with the
    same idempotency key (the provider answers with the call the key made, or makes it once) for as
    long as the attempt is younger than the replay window (``DEFAULT_REPLAY_WINDOW_S``: 50 minutes,
    inside the provider's hour for a key), waiting 2 s and then twice as long after each send, up to
    60 s, with no cap on the number of sends. Past that window (or when the batch's settings are gone)
    it looks the call up by metadata (``find_calls_by_metadata``) and declares the attempt not placed
    only once nothing can still be on its way. ``to_number`` and ``metadata`` are those of the
    request, to make the look-up easy.
    """

    retryable = False
    kind = "create_outcome_unknown"

    def __init__(self, message: str, *, status: int | None = None, endpoint: str | None = "create_phone_call",
                 to_number: str | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, status=status, endpoint=endpoint)
        self.to_number = to_number
        self.metadata = dict(metadata or {})


class DialAborted(OutdialError):
    """A dial stopped before its create request was sent: nothing reached the provider.

    Raised by the check made right before each send of a create: the batch is not cancelled, the
    number is on no do-not-call list, and :func:`shared.domain.decisions.check_before_send` (the shared time,
    the fence and the calling window). On a first dial the attempt is then not placed (its slot and hold
    go back) and the job is cancelled (``cancelled``), waits for the window's next opening (``window``),
    is decided again at once (``dnc``) or is released a moment later; a send again of an ambiguous
    create is looked up instead.

    :param kind: ``cancelled`` (the batch was cancelled, or deleted, after the dial was decided),
        ``dnc`` (the number was listed meanwhile), ``clock`` (the shared time is not known closely
        enough), ``fence`` (the lease may end before the create's answer is due) or ``window`` (the
        calling window is closed, or closes before the provider would receive the call).
    :param reason: why (a :class:`~shared.domain.reasons.Reason`; a text is kept as the ``text`` reason).
    :param next_try_at: for ``window``, the next instant the window allows (a ``datetime``), else None.
    """

    def __init__(self, kind: str, reason: Reason | str, *, next_try_at: datetime | None = None) -> None:
        reason = reason if isinstance(reason, Reason) else because("text", text=reason)
        super().__init__(reason.text())
        self.kind = kind
        self.reason = reason
        self.next_try_at = next_try_at
