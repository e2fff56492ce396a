"""The review queue in the web app: its entries with the decisions taken so far, the
photos it names, and recording a decision (keep, relabel, drop).

The queue comes from `fashionlens serve --review QUEUE.json` (setting `review`). Each
decision is written at once, atomically, to `QUEUE.decisions.json` beside it, so a
closed tab resumes where it stopped.

A queue names photos by their path relative to its `base` folder. Only those photos are
served, and only when the file, symlinks followed, lies under that folder and opens as
an image (served as the type it is); nothing is served by a path as given, and no
absolute path is published. Reading the queue and its photos needs the API key unless
the operator opted out (`public_review`): a dataset is the shop's own.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from ...errors import DataError
from ..errors import ApiError, error_responses
from ..security import _api_key_header, _check_key, _supplied_key, require_write

# What a browser shows, by Pillow's format name: a photo is served as what it is,
# whatever its file name says.
SHOWN = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
         "BMP": "image/bmp"}


async def require_review_read(request: Request,
                              key: str | None = Security(_api_key_header)) -> None:
    """The review queue and its photos need the API key unless `public_review` is set."""
    settings = request.app.state.settings
    if settings.public_review or getattr(request.app.state, "review", None) is None:
        return  # (with no queue open the route says so: there is nothing to protect)
    if not settings.api_key:
        raise ApiError(403, "review_needs_key",
                       "the review queue is shown only with the API key, and this service "
                       "has none: start it with --api-key (or --public-review to show the "
                       "queue to anyone who reaches the service)")
    _check_key(request, _supplied_key(request, key), "review requests")


router = APIRouter(tags=["review"])
reading = APIRouter(dependencies=[Depends(require_review_read)],
                    responses=error_responses(401, 403))


class ReviewState:
    """One queue and its decisions file, loaded when the service starts."""

    def __init__(self, queue_path: str | Path) -> None:
        from ...curation.decisions import Decisions, decisions_path
        from ...curation.review import read_queue

        self.path = Path(queue_path).expanduser()
        self.queue = read_queue(self.path)
        self.root = Path(self.queue["base"]).expanduser().resolve()
        self.decisions = Decisions(decisions_path(self.path), self.queue)
        self.photos = {photo["photo"] for entry in self.queue["entries"]
                       for photo in [entry, *(entry.get("related") or [])]}
        self._checked: dict[str, tuple[tuple[int, int], str]] = {}
        self._lock = threading.Lock()

    def photo_file(self, photo: str) -> tuple[Path, str]:
        """The file of a queued photo and its media type; ApiError when it is not one the
        queue lists, lies outside the queue's folder (symlinks followed) or is no image."""
        from PIL import Image, UnidentifiedImageError

        if photo not in self.photos:
            raise ApiError(404, "unknown_photo", f"photo '{photo}' is not in the review queue")
        path = (self.root / photo).resolve()
        if not path.is_relative_to(self.root):
            raise ApiError(403, "outside_dataset", f"photo '{photo}' lies outside the "
                                                   "dataset's folder: not served")
        try:
            stat = path.stat()
        except OSError:
            stat = None
        if stat is None or not path.is_file():
            raise ApiError(404, "photo_missing", f"photo '{photo}' is not there any more")
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            known = self._checked.get(photo)
        if known is not None and known[0] == stamp:
            return path, known[1]
        try:
            with Image.open(path) as img:
                kind = SHOWN.get(img.format or "")
                img.verify()
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError,
                Image.DecompressionBombError):
            kind = None
        if kind is None:
            raise ApiError(404, "not_an_image", f"photo '{photo}' does not open as an image "
                                                "a browser shows: not served")
        with self._lock:
            self._checked[photo] = (stamp, kind)
        return path, kind

    def summary(self) -> dict[str, Any]:
        decided = self.decisions.snapshot()
        entries = [{**e, "decision": decided.get(e["photo"])} for e in self.queue["entries"]]
        next_open = next((i for i, e in enumerate(entries) if e["decision"] is None),
                         len(entries))
        # File names only: the queue's folder is the operator's, not the client's.
        return {"queue": self.path.name, "decisions_file": self.decisions.path.name,
                "classes": self.queue.get("classes", []),
                "multilabel": bool(self.queue.get("multilabel")),
                "counts": self.queue.get("counts", {}), "photos": self.queue.get("photos"),
                "decided": sum(1 for e in entries if e["decision"]), "next": next_open,
                "entries": entries}


def get_review(request: Request) -> ReviewState:
    state = getattr(request.app.state, "review", None)
    if state is None:
        raise ApiError(404, "no_review", "no review queue is open: start the service with "
                                         "fashionlens serve --review QUEUE.json")
    return state


@reading.get("/review", summary="The review queue with the decisions taken so far",
             responses=error_responses(404))
async def review_queue(request: Request) -> dict:
    return get_review(request).summary()


@reading.get("/review/photo", summary="A photo the queue names (by its id in the queue)",
             response_class=FileResponse, responses=error_responses(404))
async def review_photo(request: Request, photo: str) -> FileResponse:
    path, kind = await run_in_threadpool(get_review(request).photo_file, photo)
    return FileResponse(path, media_type=kind)


class Decision(BaseModel):
    """The body of POST /review/decisions."""

    model_config = ConfigDict(extra="forbid")
    photo: str = Field(min_length=1, max_length=4096, description="The entry's photo id.")
    action: Literal["keep", "relabel", "drop", "undo"]
    labels: list[Annotated[str, Field(max_length=200)]] | None = Field(
        default=None, max_length=500, description="The new class (or tags) of a relabel.")
    entry: str | None = Field(default=None, max_length=64)


@router.post("/review/decisions", summary="Record a decision on a queued photo",
             dependencies=[Depends(require_write)],
             responses=error_responses(400, 401, 403, 404, 408, 413, 422))
async def record_decision(request: Request, body: Annotated[Decision, Body()]) -> dict:
    state = get_review(request)

    def record() -> dict | None:
        if body.action == "undo":
            state.decisions.undo(body.photo)
            return None
        return state.decisions.record(body.photo, body.action, body.labels, body.entry)

    try:
        decision = await run_in_threadpool(record)
    except DataError as exc:
        raise ApiError(400, "bad_decision", str(exc)) from exc
    except OSError as exc:
        raise ApiError(500, "not_saved", f"{state.decisions.path}: the decision could not "
                                         f"be saved ({exc.strerror or exc})") from exc
    return {"photo": body.photo, "decision": decision,
            "decided": len(state.decisions.items)}


router.include_router(reading)
