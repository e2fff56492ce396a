"""The review queue in the web app: its entries with the decisions taken so far, the
photos it names, and recording a decision (keep, relabel, drop).

The queue comes from `fashionlens serve --review QUEUE.json` (setting `review`). Each
decision is written at once, atomically, to `QUEUE.decisions.json` beside it, so a
closed tab resumes where it stopped. Only the queue's own photos are served, and they
are only ever read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from ...errors import DataError
from ..errors import ApiError, error_responses
from ..security import require_write

router = APIRouter(tags=["review"])


class ReviewState:
    """One queue and its decisions file, loaded when the service starts."""

    def __init__(self, queue_path: str | Path) -> None:
        from ...curation.decisions import Decisions, decisions_path
        from ...curation.review import read_queue

        self.path = Path(queue_path).expanduser()
        self.queue = read_queue(self.path)
        self.decisions = Decisions(decisions_path(self.path), self.queue)
        self.files: dict[str, Path] = {}
        for entry in self.queue["entries"]:
            for photo in [entry, *(entry.get("related") or [])]:
                self.files.setdefault(photo["photo"], Path(photo["path"]))

    def summary(self) -> dict[str, Any]:
        decided = self.decisions.snapshot()
        entries = [{**e, "decision": decided.get(e["photo"])} for e in self.queue["entries"]]
        next_open = next((i for i, e in enumerate(entries) if e["decision"] is None),
                         len(entries))
        return {"queue": str(self.path), "decisions_file": str(self.decisions.path),
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


@router.get("/review", summary="The review queue with the decisions taken so far",
            responses=error_responses(404))
async def review_queue(request: Request) -> dict:
    return get_review(request).summary()


@router.get("/review/photo", summary="A photo the queue names", response_class=FileResponse,
            responses=error_responses(404))
async def review_photo(request: Request, photo: str) -> FileResponse:
    state = get_review(request)
    path = state.files.get(photo)
    if path is None:
        raise ApiError(404, "unknown_photo", f"photo '{photo}' is not in the review queue")
    if not path.is_file():
        raise ApiError(404, "photo_missing", f"photo '{photo}': file {path} is not there "
                                             "any more")
    return FileResponse(path)


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
