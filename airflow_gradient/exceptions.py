"""Errors raised by airflow-gradient.

Every error derives from :class:`GradientError`, so one ``except GradientError`` catches them all::

    GradientError
    ├── GradientRequestInvalid        bad input, raised before any request leaves the machine
    │   └── GradientArgumentError     an argument of an operator, the decorator or the hook is
    │                                 outside its allowed values (``argument``, ``allowed``)
    ├── GradientConfigError           the Airflow connection is unusable (no key, bad URL)
    │   └── GradientRateLimitStoreError   its ``rate_limit_store`` (Redis) cannot be used
    ├── GradientTransportError        no usable HTTP reply
    │   ├── GradientTimeoutError      connect/read timeout, or HTTP 408
    │   └── GradientConnectionError   refused, reset or dropped connection
    ├── GradientAPIError              the server answered with an error status
    │   ├── GradientBadRequestError   400, 413, 422 and other 4xx: fix the request
    │   ├── GradientAuthError         401, 403: fix the connection's model access key
    │   ├── GradientPaymentError      402: billing is not set up on the account
    │   ├── GradientNotFoundError     404: unknown model or path
    │   ├── GradientConflictError     409
    │   ├── GradientRateLimitError    429 (``retry_after`` in seconds when the server said)
    │   └── GradientServerError       500 and above
    ├── GradientProtocolError         a reply that is not what the API documents: malformed JSON,
    │                                 an error body in a 200, a stream without a terminal event
    ├── GradientOutputError           the reply does not fit the requested ``output_schema``
    ├── GradientToolLoopError         the model still called tools after ``max_tool_rounds``
    └── BatchItemFailed               a Batch Inference job gave no usable result for an item
        ├── BatchItemExpired          the job's completion window ended before the item ran
        └── BatchItemCancelled        the job was cancelled before the item ran

``BatchItemFailed`` and its subclasses are not raised: they name the ``error.type`` of a failed row
written by :class:`~airflow_gradient.GradientBatchJobOperator`.

``GradientAPIError`` and its subclasses carry ``status``, the server's ``message``, ``code`` and
``request_id`` when the body or headers had them. ``retryable`` says whether the hook retries it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class GradientError(Exception):
    """Base class of every airflow-gradient error."""

    retryable: bool = False


class GradientRequestInvalid(GradientError, ValueError):
    """The request breaks a documented rule; nothing was sent.

    ``errors`` lists ``(field, rule)`` pairs, the field as a dotted path such as ``input[2].role``.
    """

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class GradientArgumentError(GradientRequestInvalid):
    """An argument of an operator, ``@task.gradient`` or :class:`GradientHook` is outside its
    allowed values; nothing was sent, uploaded or created.

    ``argument`` names it, ``reason`` says what is wrong (usually what was given) and ``allowed``
    what it may be; the message is ``invalid argument: <argument>: <reason>; allowed: <allowed>``.
    Operators raise it as the cause of an ``AirflowFailException``: never retried.
    """

    def __init__(self, argument: str, reason: str, allowed: str) -> None:
        super().__init__(f"invalid argument: {argument}: {reason}; allowed: {allowed}", [(argument, allowed)])
        self.argument = argument
        self.reason = reason
        self.allowed = allowed

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.argument, self.reason, self.allowed))


class GradientConfigError(GradientError):
    """The Airflow connection cannot be used as it is."""


class GradientRateLimitStoreError(GradientConfigError):
    """The connection's ``rate_limit_store`` (a Redis connection) is missing, invalid or unreachable
    when a batch starts. The message names that connection; a batch never retries it."""


class GradientTransportError(GradientError):
    """No usable HTTP reply arrived."""

    retryable = True
    status: int | None = None


class GradientTimeoutError(GradientTransportError):
    """The request timed out (client side, or HTTP 408 from the server)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GradientConnectionError(GradientTransportError):
    """The connection was refused, reset or dropped before a reply."""


class GradientAPIError(GradientError):
    """The server answered with an error status."""

    # The server's own x-should-retry header, when it sent one: it overrides ``retryable``.
    server_says_retry: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        request_id: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.param = param
        # Seconds the server asked us to wait (Retry-After, retry-after-ms or x-ratelimit-reset-*).
        self.retry_after = retry_after
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [f"HTTP {self.status}: {self.message}"]
        if self.code:
            parts.append(f"code={self.code}")
        if self.param:
            parts.append(f"param={self.param}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only init: make the error survive pickling (multiprocessing, triggers).
        return (
            _rebuild_api_error,
            (
                type(self),
                self.message,
                dict(
                    status=self.status,
                    code=self.code,
                    request_id=self.request_id,
                    param=self.param,
                    retry_after=self.retry_after,
                ),
            ),
        )


def _rebuild_api_error(cls: type[GradientAPIError], message: str, kwargs: dict[str, Any]) -> GradientAPIError:
    return cls(message, **kwargs)


class GradientBadRequestError(GradientAPIError):
    """400, 413, 422 or another 4xx: the server rejected the request."""


class GradientAuthError(GradientAPIError):
    """401 or 403: the model access key was refused."""


class GradientPaymentError(GradientAPIError):
    """402: the account has no billing set up, or ran out of credit."""


class GradientNotFoundError(GradientAPIError):
    """404: unknown model, or the base URL points at the wrong place."""


class GradientConflictError(GradientAPIError):
    """409: the server reports a conflict; retried, as the SDKs do."""

    retryable = True


class GradientRateLimitError(GradientAPIError):
    """429: too many requests or tokens for the account's limit."""

    retryable = True


class GradientServerError(GradientAPIError):
    """500 and above: the service failed; retried."""

    retryable = True


class GradientProtocolError(GradientError):
    """The reply does not match the documented API (malformed JSON, error body in a 200, a stream
    cut short). Not retried: the request may already have been billed."""

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id

    @property
    def may_be_billed(self) -> bool:
        """The reply came with a 2xx status: the server generated it, so it may have been billed."""
        return self.status is not None and 200 <= self.status < 300

    @classmethod
    def of_shape(
        cls, exc: ValidationError, what: str, *, status: int | None = None, request_id: str | None = None
    ) -> GradientProtocolError:
        """The error for ``what`` (a reply, a frame) that pydantic refused: its first problem and where."""
        first = exc.errors(include_url=False)[0]
        where = ".".join(map(str, first["loc"])) or "top level"
        return cls(f"{what} does not match the documented shape: {first['msg']} at {where}",
                   status=status, request_id=request_id)


class GradientOutputError(GradientError):
    """The model's reply could not be parsed or validated as the requested structured output."""


class GradientToolLoopError(GradientError):
    """The model still asked for tools after the allowed number of rounds."""


class BatchItemFailed(GradientError):
    """The job reported no usable result for the item."""


class BatchItemExpired(BatchItemFailed):
    """The job's completion window ended before the item ran."""


class BatchItemCancelled(BatchItemFailed):
    """The job was cancelled before the item ran."""


__all__ = [
    "BatchItemCancelled",
    "BatchItemExpired",
    "BatchItemFailed",
    "GradientAPIError",
    "GradientArgumentError",
    "GradientAuthError",
    "GradientBadRequestError",
    "GradientConfigError",
    "GradientConflictError",
    "GradientConnectionError",
    "GradientError",
    "GradientNotFoundError",
    "GradientOutputError",
    "GradientPaymentError",
    "GradientProtocolError",
    "GradientRateLimitError",
    "GradientRateLimitStoreError",
    "GradientRequestInvalid",
    "GradientServerError",
    "GradientTimeoutError",
    "GradientToolLoopError",
    "GradientTransportError",
]
