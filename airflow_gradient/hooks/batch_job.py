"""GradientBatchJobHook: Gradient's provider-side Batch Inference jobs (``/v1/batches``).

The flow (``docs/api-notes.md#files-and-endpoints``): ask for an upload URL (``POST /batches/files``), PUT the
JSONL there, create the job (``POST /batches``, idempotent on ``request_id``), watch it
(``GET /batches/{id}``), fetch short-lived links to its result files (``GET .../results``) and
download them; ``POST .../cancel`` stops it.

Every JSON call is described once (:class:`_Call`) and sent by :meth:`_send_call` or
:meth:`_asend_call`, which differ only in the client they use; both go through the connection's
retry policy. Every request, the presigned upload and downloads included, is one attempt of
:mod:`airflow_gradient.http.attempt`, bounded by the request timeout. Presigned object-storage URLs
get neither the model access key nor any content type but ``application/octet-stream``: another
header breaks their signature, and the key has no business on a storage host.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from airflow_gradient.exceptions import (
    GradientAuthError,
    GradientBadRequestError,
    GradientConflictError,
    GradientServerError,
)
from airflow_gradient.hooks.gradient import GradientHook
from airflow_gradient.http import replies
from airflow_gradient.http.attempt import build_request, exchange
from airflow_gradient.models.batch_job import BatchJob, BatchJobPage, BatchJobResults, FileUpload
from airflow_gradient.observability import attributes as attr
from airflow_gradient.observability.spans import AttributeValue, CallTrace

T = TypeVar("T")

UPLOAD_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One JSON call: what to send and how to read the reply."""

    method: str
    path: str
    body: dict[str, Any] | None
    model: Callable[[Any], T]
    batch_id: str | None = None

    def trace(self, base_url: str) -> CallTrace:
        """The call's spans: its method and job beside the conventions' attributes."""
        extra: dict[str, AttributeValue] = {attr.HTTP_METHOD: self.method}
        if self.batch_id is not None:
            extra[attr.BATCH_ID] = self.batch_id
        return CallTrace(self.path, self.body, base_url, extra=extra)


class GradientBatchJobHook(GradientHook):
    """Create, watch, cancel and download Gradient Batch Inference jobs.

    Same connection as :class:`GradientHook`. Sync methods serve the worker, the ``a``-prefixed
    ones the triggerer, which gives the hook settings it read with the async connection API.
    (Formerly ``GradientBatchJobsHook``; that name still works and warns once.)
    """

    hook_name = "DigitalOcean Gradient Batch Inference"
    # A 409 here reports a job's state ("already terminal", "not submitted yet").
    conflict_is_final = True

    # -- the JSON API ---------------------------------------------------------------------------

    def create_file(self, file_name: str) -> FileUpload:
        """``POST /batches/files``: a file id and a presigned URL to PUT the JSONL to."""
        return self._send_call(_Call("POST", "/batches/files", {"file_name": file_name}, FileUpload.model_validate))

    def create_job(
        self,
        file_id: str,
        *,
        request_id: str,
        provider: str = "openai",
        endpoint: str = "/v1/responses",
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
    ) -> BatchJob:
        """``POST /batches``. The same ``request_id`` returns the job it created before."""
        body: dict[str, Any] = {
            "file_id": file_id,
            "provider": provider,
            "endpoint": endpoint,
            "completion_window": completion_window,
            "request_id": request_id,
        }
        if metadata:
            body["metadata"] = metadata
        return self._send_call(_Call("POST", "/batches", body, BatchJob.model_validate))

    def get_job(self, batch_id: str) -> BatchJob:
        return self._send_call(_get_job(batch_id))

    async def aget_job(self, batch_id: str) -> BatchJob:
        return await self._asend_call(_get_job(batch_id))

    def list_jobs(self, *, after: str | None = None, limit: int = 100, status: str | None = None) -> BatchJobPage:
        """One page of ``GET /batches`` (``limit`` 1 to 100); ``next_cursor`` goes to ``after``."""
        query = httpx.QueryParams({k: v for k, v in (("after", after), ("limit", limit), ("status", status)) if v})
        return self._send_call(_Call("GET", f"/batches?{query}", None, BatchJobPage.model_validate))

    def get_results(self, batch_id: str) -> BatchJobResults:
        """Links to the job's output and error files (412 while they are not ready)."""
        return self._send_call(_Call("GET", f"/batches/{batch_id}/results", None, BatchJobResults.model_validate,
                                     batch_id))

    def cancel_job(self, batch_id: str) -> BatchJob:
        """Ask the job to stop; a job already finished (409) is returned as it is."""
        try:
            return self._send_call(_cancel_job(batch_id))
        except GradientConflictError:
            return self.get_job(batch_id)

    async def acancel_job(self, batch_id: str) -> BatchJob:
        try:
            return await self._asend_call(_cancel_job(batch_id))
        except GradientConflictError:
            return await self.aget_job(batch_id)

    def _send_call(self, call: _Call[T]) -> T:
        retrying = self.retry_policy.retrying(self._log_retry)
        trace = call.trace(self.settings.base_url)

        def once() -> T:
            with trace.attempt() as span:  # one span per attempt (airflow_gradient.observability)
                response = self.request(call.method, call.path, call.body)
                span.status(response.status_code)
                return self._read(call, response)

        return retrying(once)

    async def _asend_call(self, call: _Call[T]) -> T:
        retrying = self.retry_policy.async_retrying(self._log_retry)
        trace = call.trace(self.settings.base_url)

        async def once() -> T:
            with trace.attempt() as span:
                response = await self.arequest(call.method, call.path, call.body)
                span.status(response.status_code)
                return self._read(call, response)

        return await retrying(once)

    def _read(self, call: _Call[T], response: httpx.Response) -> T:
        return replies.json_model(response, self.gradient_conn_id, call.model,
                                  f"{call.method} {call.path.split('?')[0]} reply")

    # -- presigned object storage ---------------------------------------------------------------

    def upload_file(self, upload_url: str, path: Path, *, timeout: float | None = None) -> None:
        """PUT the file at ``path`` to a presigned URL: no key, ``application/octet-stream``, a
        ``Content-Length`` (object stores refuse chunked uploads); each try is one attempt limited
        to ``timeout`` seconds (the request timeout; default: the connection's read timeout), and
        retried like any call."""
        size = path.stat().st_size
        trace = _storage_trace("PUT", upload_url)

        def once() -> None:
            client = self.get_conn()
            with trace.attempt() as span, path.open("rb") as handle:
                request = _presigned(client, "PUT", upload_url, timeout, content=handle, headers={
                    "Content-Type": UPLOAD_CONTENT_TYPE, "Content-Length": str(size)})
                response = exchange(client, request, self.attempt(timeout, _shown(request), billed=False))
                span.status(response.status_code)
                _check_storage(response, "the upload of the batch input")

        self.retry_policy.retrying(self._log_retry)(once)

    # Object storage bills nothing: a transfer cut off after its 200 is tried again whole
    # (``billed=False``), where a cut /v1/responses reply is not.

    def download_file(self, url: str, target: Path, *, timeout: float | None = None) -> None:
        """Download a presigned result URL to ``target`` in one attempt limited to ``timeout``
        seconds (as :meth:`upload_file`); a broken download is tried again whole."""
        trace = _storage_trace("GET", url)

        def once() -> None:
            client = self.get_conn()
            with trace.attempt() as span:
                request = _presigned(client, "GET", url, timeout)
                attempt = self.attempt(timeout, _shown(request), billed=False)
                status = attempt.send(client, request).status_code
                span.status(status)
                if status >= 400:
                    _check_storage(attempt.read_body(), "the download of batch results")
                with target.open("wb") as handle:
                    attempt.read_body(sink=handle.write)

        self.retry_policy.retrying(self._log_retry)(once)


def _presigned(client: httpx.Client, method: str, url: str, timeout: float | None, **kwargs: Any) -> httpx.Request:
    """A request to a presigned URL from the pooled client, without the client's Authorization."""
    request = build_request(client, method, url, None, timeout, **kwargs)
    del request.headers["Authorization"]
    return request


def _storage_trace(method: str, url: str) -> CallTrace:
    """The spans of a transfer to a presigned URL: ``server.*`` name the storage host, and nothing
    records the URL's query, which holds its signature."""
    bare = httpx.URL(url).copy_with(query=None, fragment=None)
    return CallTrace(bare.path, None, str(bare.copy_with(path="/")), operation=attr.OP_BATCH_FILE,
                     extra={attr.HTTP_METHOD: method})


def _shown(request: httpx.Request) -> str:
    """A presigned URL as errors name it: without the query, which holds its signature."""
    return str(request.url.copy_with(query=None))


def _check_storage(response: httpx.Response, what: str) -> None:
    """An object store's refusal as our error; its 403 is an expired or mis-signed link, not a key."""
    status = response.status_code
    if status < 400:
        return
    found = re.search(r"<Message>(.*?)</Message>", response.text, re.S)
    detail = found.group(1).strip() if found else response.text.strip()[:300] or "no details"
    cls = (GradientAuthError if status in (401, 403)
           else GradientServerError if status >= 500 else GradientBadRequestError)
    raise cls(f"{what} was refused by the storage host (an expired or altered link, or a header it "
              f"does not accept): {detail}", status=status)


def _get_job(batch_id: str) -> _Call[BatchJob]:
    return _Call("GET", f"/batches/{batch_id}", None, BatchJob.model_validate, batch_id)


def _cancel_job(batch_id: str) -> _Call[BatchJob]:
    return _Call("POST", f"/batches/{batch_id}/cancel", None, BatchJob.model_validate, batch_id)

