"""Getting a photo out of a request: a multipart upload or the raw bytes as the body.

Both forms are accepted on every endpoint that takes a photo, so a browser form, `curl
-F image=@photo.jpg` and `curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg'`
all work; anything else gets a 4xx that says what to send instead.
"""

from __future__ import annotations

from fastapi import Request
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from .engine import decode_upload
from .errors import ApiError

# Multipart field names accepted for the photo, in order of preference.
IMAGE_FIELDS = ("image", "file", "photo")
RAW_TYPES = ("application/octet-stream",)
HOW = ("send the photo as multipart/form-data (a file field named 'image') or as the raw "
       "request body with an image/* Content-Type")

# The photo part of a multipart body: only these types are accepted (check_upload_type).
IMAGE_PART_TYPES = "image/*, application/octet-stream"
IMAGE_PART_ENCODING = {"image": {"contentType": IMAGE_PART_TYPES}}

# OpenAPI description of the photo body, shared by the endpoints that take one.
IMAGE_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["image"],
                           "properties": {"image": {
                               "type": "string", "format": "binary",
                               "description": "The photo (" + IMAGE_PART_TYPES + ")."}}},
                "encoding": IMAGE_PART_ENCODING,
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def check_upload_type(upload: UploadFile, field: str) -> None:
    """An uploaded file must not announce itself as something other than an image."""
    declared = _media_type(upload.content_type)
    if declared and not declared.startswith("image/") and declared not in RAW_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"the '{field}' file is {declared}, not an image")


async def read_image_bytes(request: Request) -> tuple[bytes, str]:
    """The photo's bytes and a name for messages; 400/415 when there is none."""
    ctype = _media_type(request.headers.get("content-type"))
    if ctype == "multipart/form-data":
        form = await request.form(max_files=4, max_fields=32)
        for field in IMAGE_FIELDS:
            upload = form.get(field)
            if isinstance(upload, UploadFile):
                check_upload_type(upload, field)
                data = await upload.read()
                name = upload.filename or field
                if not data:
                    raise ApiError(400, "empty_body", f"the uploaded file '{name}' is empty")
                return data, name
        raise ApiError(400, "missing_image", f"no photo in the form; {HOW}")
    if ctype.startswith("image/") or ctype in RAW_TYPES:
        data = await request.body()
        if not data:
            raise ApiError(400, "empty_body", f"the request body is empty; {HOW}")
        return data, "uploaded image"
    if not ctype:
        data = await request.body()
        if not data:
            raise ApiError(400, "empty_body", f"the request body is empty; {HOW}")
        raise ApiError(415, "unsupported_media_type", f"the request has no Content-Type; {HOW}")
    raise ApiError(415, "unsupported_media_type", f"Content-Type {ctype} is not accepted; {HOW}")


async def read_image(request: Request, max_side: int, draft_size: int | None
                     ) -> Image.Image:
    """Read and decode the request's photo off the event loop."""
    data, name = await read_image_bytes(request)
    return await run_in_threadpool(decode_upload, data, name, max_side, draft_size)
