"""/admin/subscribers: search by address, counts by status, CSV export; for admins only, CSV
import (with the line-numbered report) and erasing one reader (GDPR) after a confirmation.

The import has a router of its own: it takes a file, so a larger body and one file part.
"""

from __future__ import annotations

import io

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from digest.config import Settings
from digest.readers.preferences import erase_data
from digest.store import audit, db
from digest.store.subscriber_csv import ImportReport, export_csv, import_csv
from digest.store.subscribers import count_by_status, get_subscriber, search_subscribers
from digest.web.deps import EngineDep, SettingsDep
from digest.web.desk.session import AdminDep, DeskUser, EditorDep, checked_form
from digest.web.desk.views import desk_page
from digest.web.forms import mask
from digest.web.limits import FORM_LIMITS, FormLimits, GetAlsoHead

__all__ = ["IMPORT_PATH", "MAX_IMPORT_BYTES", "import_router", "router"]

router = APIRouter(route_class=GetAlsoHead, form_limits=FORM_LIMITS)
import_router = APIRouter(route_class=GetAlsoHead)

IMPORT_PATH = "/admin/subscribers/import"
# A CSV line is ~60 bytes: 8 MiB is over 100,000 readers, and still bounded.
MAX_IMPORT_BYTES = 8 * 1024 * 1024
_IMPORT_LIMITS: FormLimits = {"max_files": 1, "max_fields": 4}
_SHOWN = 50


@router.get("/admin/subscribers")
def subscribers_page(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    return _page(request, settings, engine, user, request.query_params.get("q", ""))


@router.get("/admin/subscribers/export.csv")
def subscribers_export(
    request: Request, settings: SettingsDep, engine: EngineDep, user: EditorDep
) -> Response:
    out = io.StringIO()
    rows = export_csv(engine, out)
    if request.method == "GET":  # a HEAD (a link checker) exported nothing to anyone
        audit.record(
            engine, actor=user.editor.email, action="subscribers.export",
            detail=f"{rows} rows", now=db.utcnow(),
        )  # fmt: skip
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="subscribers.csv"',
            "Cache-Control": "no-store",
        },
    )


@import_router.post(IMPORT_PATH)
async def subscribers_import(
    request: Request, settings: SettingsDep, engine: EngineDep, user: AdminDep
) -> Response:
    form = await checked_form(request, user, _IMPORT_LIMITS)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return await run_in_threadpool(
            lambda: _page(request, settings, engine, user, error="Choose a CSV file to import.")
        )
    confirmed = form.get("confirmed") == "yes"
    # In memory (bounded by MAX_IMPORT_BYTES): import_csv reads a binary file object, which
    # the spooled upload is not.
    data = io.BytesIO(await upload.read())

    def run() -> ImportReport:
        report = import_csv(engine, data, confirmed=confirmed, now=db.utcnow())
        audit.record(
            engine, actor=user.editor.email, action="subscribers.import",
            target=(upload.filename or "upload")[:200], detail=_summary(report), now=db.utcnow(),
        )  # fmt: skip
        return report

    report = await run_in_threadpool(run)
    return await run_in_threadpool(
        lambda: _page(request, settings, engine, user, report=report, status_code=200)
    )


@router.post("/admin/subscribers/erase")
async def subscribers_erase(
    request: Request, settings: SettingsDep, engine: EngineDep, user: AdminDep
) -> Response:
    form = await checked_form(request, user)
    email = form.get("email")
    email = email.strip() if isinstance(email, str) else ""

    def run() -> Response:
        found = get_subscriber(engine, email) if email else None
        if found is None:
            error = "No subscriber has this address."
            return _page(request, settings, engine, user, email, error=error, status_code=404)
        if form.get("confirm") != "yes":  # the first press only asks: erasing cannot be undone
            return _page(request, settings, engine, user, email, confirm_erase=found)
        erase_data(engine, found.id)
        # The log keeps the row's id and a masked address: an erased address is not kept.
        audit.record(
            engine, actor=user.editor.email, action="subscriber.erase",
            target=f"subscriber {found.id}", detail=mask(found.email), now=db.utcnow(),
        )  # fmt: skip
        notice = f"Erased {mask(found.email)}: everything kept about them is deleted."
        return _page(request, settings, engine, user, notice=notice)

    return await run_in_threadpool(run)


def _summary(report: ImportReport) -> str:
    state = "refused, nothing imported" if report.refused else "imported"
    return (
        f"{state}: added {report.added}, updated {report.updated}, unchanged {report.unchanged},"
        f" kept suppressed {report.kept_suppressed}, {len(report.errors)} errors"
    )


def _page(
    request: Request,
    settings: Settings,
    engine: Engine,
    user: DeskUser,
    query: str = "",
    *,
    status_code: int = 200,
    **context: object,
) -> Response:
    query = query.strip()[:320]
    found = search_subscribers(engine, query, limit=_SHOWN) if query else []
    report = context.setdefault("report", None)
    context.setdefault("confirm_erase", None)
    return desk_page(
        request,
        settings,
        user,
        "subscribers",
        status_code=status_code,
        q=query,
        found=found,
        shown=_SHOWN,
        counts=count_by_status(engine),
        summary=_summary(report) if isinstance(report, ImportReport) else None,
        **context,
    )
