"""The search service's web layer: a Starlette app over a :class:`SearchService`.

Routes (every ``/api/`` request carries ``Authorization: Bearer TOKEN`` when the service
has a token; answers are JSON, errors ``{"error": "..."}`` with the status that says why):

=========================  ==========================================================
``GET /``                  the search page (drop an image, see the hits and why)
``GET /api/health``        ``{"status": "ok", "items": N}``
``GET /api/index``         ``index info``'s facts and the encoder
``POST /api/search``       multipart ``file`` (+ ``k``, ``frame``, ``us_region=1``,
                           ``report=1``): hits
``POST /api/items``        multipart ``file`` + ``id`` (+ ``label``, ``frame``,
                           ``us_region=1``, ``replace=1``): add (201)
``DELETE /api/items/ID``   remove one item
=========================  ==========================================================

``frame`` and ``us_region`` are the command line's ``--frame`` and ``--us-region``
(:class:`deploy.search_service.SearchService`); one index folder is served.

Status codes: 400 a bad request (no file, bad ``k``), 401 a missing or wrong token, 404
an unknown id, 409 an id taken or an image already indexed, 413 a body over the upload
limit, 422 a file that is not a readable image, 503 the index kept busy by another writer.

Encoding and searching run in Starlette's thread pool, so one slow request does not hold
up the others; the ONNX Runtime and LiteRT sessions are run from several threads at once.
"""

from __future__ import annotations

import hmac
import json
import tempfile
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from deploy.errors import error_line
from deploy.index import IndexFormatError, IndexMismatchError
from deploy.locking import LockTimeout
from deploy.preprocess import ImageError
from deploy.search_service import SearchService, ServiceError, upload_name

DEFAULT_MAX_UPLOAD_MB = 64
PAGE = "serve_page.html"
_NO_STORE = {"Cache-Control": "no-store"}  # answers are about patients: never cached
_PAGE_HEADERS = {
    **_NO_STORE,
    # The page and the report inside it need nothing from elsewhere.
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class UploadTooLarge(Exception):
    """The request body passed the service's upload limit."""


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers={**_NO_STORE, **(headers or {})})


class BearerToken:
    """ASGI middleware: every ``/api/`` request must carry ``Authorization: Bearer TOKEN``.

    Checked before the body is read, so an unauthenticated upload is never received.
    """

    def __init__(self, app, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            if not given:
                message = "this service needs a token: send 'Authorization: Bearer TOKEN'"
            elif scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                message = "wrong token"
            else:
                message = ""
            if message:
                response = error(401, message, {"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413.

    A ``Content-Length`` over the limit is refused before anything is read; a body sent
    without one (chunked) is counted as it arrives and refused when it passes the limit.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await _too_large(self.limit)(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise UploadTooLarge()
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> JSONResponse:
    return error(413, f"the upload is larger than this service's limit of {limit} bytes")


def create_app(
    service: SearchService,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20,
) -> Starlette:
    """The app serving ``service``; with ``token``, every ``/api/`` request needs it."""
    page = (
        resources.files("deploy")
        .joinpath(PAGE)
        .read_text(encoding="utf-8")
        .replace("__TOKEN_REQUIRED__", json.dumps(token is not None))
    )

    async def index_page(request: Request):
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    async def health(request: Request):
        items = len(await run_in_threadpool(service.index))
        return JSONResponse({"status": "ok", "items": items}, headers=_NO_STORE)

    async def info(request: Request):
        return JSONResponse(await run_in_threadpool(service.info), headers=_NO_STORE)

    async def search(request: Request):
        async with request.form(max_files=1, max_fields=8) as form:  # closes the upload
            k = _int_field(form, "k", 10)
            frame = _int_field(form, "frame", None)
            with_report = _flag(form, "report")
            us_region = _flag(form, "us_region")
            upload, name = _upload(form)
            result = await _with_file(
                upload,
                name,
                lambda path: service.search(path, name, k, frame, with_report, us_region),
            )
        return JSONResponse(result, headers=_NO_STORE)

    async def add(request: Request):
        async with request.form(max_files=1, max_fields=8) as form:
            item_id = form.get("id")
            frame = _int_field(form, "frame", None)
            replace = _flag(form, "replace")
            us_region = _flag(form, "us_region")
            label = form.get("label") or ""
            if not isinstance(label, str) or not isinstance(item_id, str | None):
                raise ServiceError("'id' and 'label' are text fields, not files")
            upload, name = _upload(form)
            result = await _with_file(
                upload,
                name,
                lambda path: service.add(path, name, item_id, label, frame, replace, us_region),
            )
        return JSONResponse(result, 200 if result["replaced"] else 201, headers=_NO_STORE)

    async def remove(request: Request):
        item_id = request.path_params["item_id"]
        return JSONResponse(await run_in_threadpool(service.remove, item_id), headers=_NO_STORE)

    async def on_service_error(request, err: ServiceError):
        return error(err.status, error_line(err))

    async def on_image_error(request, err: ImageError):
        return error(422, error_line(err))

    async def on_busy(request, err: LockTimeout):
        return error(503, error_line(err), {"Retry-After": "1"})

    async def on_too_large(request, err: UploadTooLarge):
        return _too_large(max_upload_bytes)

    async def on_http(request, err: HTTPException):
        return error(err.status_code, err.detail, err.headers)

    async def on_bad_index(request, err: ValueError):
        return error(500, f"the index on disk cannot be used: {error_line(err)}")

    app = Starlette(
        routes=[
            Route("/", index_page),
            Route("/api/health", health),
            Route("/api/index", info),
            Route("/api/search", search, methods=["POST"]),
            Route("/api/items", add, methods=["POST"]),
            Route("/api/items/{item_id:path}", remove, methods=["DELETE"]),
        ],
        exception_handlers={
            HTTPException: on_http,
            ServiceError: on_service_error,
            ImageError: on_image_error,
            LockTimeout: on_busy,
            UploadTooLarge: on_too_large,
            IndexFormatError: on_bad_index,
            IndexMismatchError: on_bad_index,
        },
    )
    app.add_middleware(BodyLimit, limit=max_upload_bytes)
    if token is not None:
        app.add_middleware(BearerToken, token=token)  # outermost: checked first
    return app


def _upload(form) -> tuple[UploadFile, str]:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ServiceError("no image: send it as the multipart form field 'file'")
    return upload, upload_name(upload.filename)


async def _with_file(upload: UploadFile, name: str, work) -> dict:
    """Runs ``work(path)`` in the thread pool on the upload written to a private temporary
    folder under its safe name (the report and messages show the name, and a DICOM file
    keeps its suffix); messages name the upload, not the temporary path."""
    data = await upload.read()
    if not data:
        raise ServiceError(f"upload {name!r}: the file is empty")

    def run():
        with tempfile.TemporaryDirectory(prefix="ynet-serve-") as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            try:
                return work(path)
            except ImageError as err:
                raise ImageError(str(err).replace(str(path), f"upload {name!r}")) from None

    return await run_in_threadpool(run)


def _int_field(form, key: str, default):
    value = form.get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or not value.strip().lstrip("-").isdigit():
        raise ServiceError(f"'{key}' must be an integer, got {value!r}")
    return int(value)


def _flag(form, key: str) -> bool:
    return form.get(key) in ("1", "true", "yes", "on")
