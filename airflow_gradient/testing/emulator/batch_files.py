"""The files of emulated Batch Inference jobs: presigned-style links, upload, download, input lines.

``POST /v1/batches/files`` hands out an upload link to ``PUT /_storage/uploads/{file_id}``, which
refuses, as a presigned object-store URL does, an Authorization header, a content type other than
``application/octet-stream``, a chunked body, a bad signature or an expired link. Result files are
downloaded from ``GET /_storage/results/{id}/{kind}``, signed the same way. The job routes that
use them are in :mod:`~airflow_gradient.testing.emulator.batch_jobs`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import Request
from starlette.responses import JSONResponse, Response

from airflow_gradient.testing.emulator.faults import do_error

if TYPE_CHECKING:
    from airflow_gradient.testing.emulator.batch_jobs import BatchJobsConfig, BatchJobStore

UPLOAD_TYPE = "application/octet-stream"
_SECRET = b"gradient-emulator-presign"

Handler = Callable[[Request, Any], Awaitable[Response]]


class Route(Protocol):
    """Registers ``handler(request, job)`` for ``method`` and ``path`` (see ``batch_jobs_router``)."""

    def __call__(self, method: str, path: str, *, auth: bool = True) -> Callable[[Handler], Handler]: ...


def api_error(status: int, error_id: str, message: str) -> JSONResponse:
    """An error reply of the batch API, in DigitalOcean's shape."""
    return JSONResponse(do_error(error_id, message, ""), status_code=status)


def _sign(*parts: str) -> str:
    return hmac.new(_SECRET, "|".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


def signed_url(request: Request, path: str, ttl: float) -> tuple[str, float]:
    expires = time.time() + ttl
    stamp = f"{expires:.0f}"
    return f"{str(request.base_url).rstrip('/')}{path}?X-Expires={stamp}&X-Signature={_sign(path, stamp)}", expires


def _storage_error(status: int, code: str, message: str) -> Response:
    body = f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return Response(body, status_code=status, media_type="application/xml")


def check_signature(request: Request) -> Response | None:
    stamp = request.query_params.get("X-Expires", "")
    if not hmac.compare_digest(request.query_params.get("X-Signature", ""), _sign(request.url.path, stamp)):
        return _storage_error(403, "SignatureDoesNotMatch", "The request signature does not match")
    if not stamp.isdigit() or float(stamp) < time.time():
        return _storage_error(403, "AccessDenied", "Request has expired")
    if "authorization" in request.headers:
        return _storage_error(400, "InvalidArgument", "Only one auth mechanism allowed")
    return None


def file_routes(route: Route, store: BatchJobStore) -> None:
    """Register the upload link, the upload and the result download."""

    @route("POST", "/v1/batches/files")
    async def create_file(request: Request, _: Any) -> Response:
        body = json.loads(await request.body() or b"{}")
        name = body.get("file_name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.endswith(".jsonl"):
            return api_error(400, "bad_request", "file_name must end in .jsonl")
        store.count("file_intents")
        with store.lock:
            file_id = f"file-{len(store.files) + 1:06d}"
            store.files[file_id] = {"file_id": file_id, "file_name": name, "data": None}
        url, expires = signed_url(request, f"/_storage/uploads/{file_id}", store.config.upload_url_ttl)
        return JSONResponse({"file_id": file_id, "upload_url": url, "expires_at": expires}, status_code=201)

    @route("PUT", "/_storage/uploads/{file_id}", auth=False)
    async def upload(request: Request, _: Any) -> Response:
        refused = check_signature(request)
        if refused is not None:
            return refused
        if request.headers.get("content-type", UPLOAD_TYPE) != UPLOAD_TYPE:
            return _storage_error(403, "SignatureDoesNotMatch", "Content-Type is part of the signature")
        if "transfer-encoding" in request.headers:
            return _storage_error(501, "NotImplemented", "Transfer-Encoding is not supported: send Content-Length")
        data = await request.body()
        with store.lock:
            store.files[request.path_params["file_id"]]["data"] = data
        store.count("uploads")
        return Response(status_code=200, headers={"etag": hashlib.md5(data).hexdigest()})

    @route("GET", "/_storage/results/{batch_id}/{kind}", auth=False)
    async def download(request: Request, job: dict[str, Any]) -> Response:
        refused = check_signature(request)
        if refused is not None:
            return refused
        store.count("downloads")
        return Response(job["files"][request.path_params["kind"]], media_type=UPLOAD_TYPE)


def read_input(
    data: bytes, provider: str, endpoint: str, config: BatchJobsConfig
) -> tuple[list[dict[str, Any]], str | None]:
    """The input lines of a job, or why the file is refused."""
    if len(data) > config.max_file_bytes:
        return [], f"the file is {len(data)} bytes, more than the {config.max_file_bytes} allowed"
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            return [], f"line {number} is not JSON"
        key = "body" if provider == "openai" else "params"
        if not isinstance(line, dict) or not line.get("custom_id") or not isinstance(line.get(key), dict):
            return [], f"line {number} is not a {provider} batch line (custom_id and {key})"
        if provider == "openai" and line.get("url") != endpoint:
            return [], f"line {number}: url {line.get('url')!r} is not the job's endpoint {endpoint!r}"
        if line["custom_id"] in seen:
            return [], f"line {number}: custom_id {line['custom_id']!r} is not unique"
        seen.add(line["custom_id"])
        lines.append(line)
    if len(lines) > config.max_file_requests:
        return [], f"the file has {len(lines)} requests, more than the {config.max_file_requests} allowed"
    return lines, None
