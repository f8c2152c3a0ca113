"""The FastAPI app the API server mounts under ``/gradient``: the three Gradient pages.

Every page asks Airflow who is calling, the way Airflow's own API does (``get_user``: the
``Authorization: Bearer`` header, else the session cookie the UI holds): a request without a valid
session is refused with 401 before anything is read. The overview shows only the DAGs whose DAG
and XComs the auth manager lets the user read; a DAG or task page of another DAG answers 403.

Airflow's API modules are imported when a page is asked for, not when this module is: the plugins
manager imports it in every Airflow process, and only the API server serves it.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse

from airflow_gradient.plugins import pages, summary
from airflow_gradient.plugins.records import load_shards, load_value, overview_rows, run_rows

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.orm import Session

    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser


async def _user(request: Request) -> BaseUser:
    from fastapi.security import HTTPBearer

    from airflow.api_fastapi.core_api.security import get_user

    bearer = await HTTPBearer(auto_error=False)(request)
    return await get_user(request, None, bearer)


def _session() -> Iterator[Session]:
    from airflow.utils.session import create_session

    with create_session(scoped=False) as session:
        yield session


# Any, not the real types: FastAPI evaluates these annotations, and the real types are imported late.
UserDep = Annotated[Any, Depends(_user)]
SessionDep = Annotated[Any, Depends(_session)]


def _may_read(user: BaseUser, dag_id: str) -> bool:
    """Whether the auth manager lets ``user`` read ``dag_id``'s XComs (where the figures are)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.XCOM, details=DagDetails(id=dag_id), user=user
    )


def _require(user: BaseUser, dag_id: str) -> None:
    if not _may_read(user, dag_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"You may not read the DAG {dag_id!r}")


def _readable_dag_ids(user: BaseUser, session: Session) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session))


def _html(body: str) -> HTMLResponse:
    # The pages hold figures per user: never cached where another user could get them.
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


def overview_html(session: Session, dag_ids: set[str] | None, days: int, *, today: datetime | None = None,
                  may_read: Any = None) -> str:
    """The nav page's HTML for the DAGs ``dag_ids`` (None: every DAG) over the last ``days`` days;
    ``may_read(dag_id)``, when given, drops further DAGs (the XCom check). The bench times this."""
    day_list = summary.period_days((today or datetime.now(UTC)).date(), days)
    since = datetime.combine(day_list[0], time.min, tzinfo=UTC)
    task_days, models = overview_rows(session, dag_ids=dag_ids, since=since, until=since + timedelta(days=days))
    if may_read is not None:
        allowed = {dag_id for dag_id in {row.dag_id for row in task_days} if may_read(dag_id)}
        task_days = [row for row in task_days if row.dag_id in allowed]
        models = [row for row in models if row.dag_id in allowed]
    return pages.overview_page(summary.overview(task_days, models, day_list), days)


def sharded_batch_html(where: str, shards: list[tuple[datetime, dict[str, Any]]]) -> str:
    """The task tab of a sharded batch as a whole: its shards' manifests merged
    (:func:`~airflow_gradient.merge_manifests`) and their timelines on one clock, from the
    first shard's start (:func:`~airflow_gradient.batch.timeline.merge_shards`)."""
    from airflow_gradient.batch.results import merge_manifests
    from airflow_gradient.batch.timeline import merge_shards

    try:
        merged = merge_manifests(value for _, value in shards)
    except ValueError as exc:  # a shard has not pushed its manifest yet
        return pages.not_found(f"{where}: not every shard has finished ({exc}); each shard's tab shows its own.")
    first = min(start for start, _ in shards)
    merged["timeline"] = merge_shards([((start - first).total_seconds(), value.get("timeline") or [])
                                       for start, value in shards])
    return pages.task_page(f"{where} (all {len(shards)} shards)", "return_value", merged)


def create_app() -> FastAPI:
    app = FastAPI(title="Gradient", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(NotImplementedError)
    def unsupported(request: Request, exc: NotImplementedError) -> HTMLResponse:
        return HTMLResponse(pages.not_found(f"Not available here: {exc}."), status_code=501)

    @app.get("/", response_class=HTMLResponse)
    def overview(user: UserDep, session: SessionDep, days: Annotated[int, Query()] = 30) -> HTMLResponse:
        if days not in pages.PERIODS:
            raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                f"days must be one of {', '.join(map(str, pages.PERIODS))}, got {days}")
        readable = _readable_dag_ids(user, session)
        return _html(overview_html(session, readable, days, may_read=lambda dag_id: _may_read(user, dag_id)))

    @app.get("/dags/{dag_id}", response_class=HTMLResponse)
    def dag(dag_id: str, user: UserDep, session: SessionDep) -> HTMLResponse:
        _require(user, dag_id)
        return _html(pages.dag_page(dag_id, summary.runs(run_rows(session, dag_id=dag_id))))

    @app.get("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}", response_class=HTMLResponse)
    def task(dag_id: str, run_id: str, task_id: str, user: UserDep, session: SessionDep,
             map_index: str = "-1") -> HTMLResponse:
        _require(user, dag_id)
        # The UI leaves {MAP_INDEX} as it is for a task that is not mapped.
        index = int(map_index) if map_index.lstrip("-").isdigit() else -1
        where = f"{dag_id} / {run_id} / {task_id}" + (f" [{index}]" if index >= 0 else "")
        found = load_value(session, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=index)
        if map_index == pages.SHARDS or (found is None and index < 0):  # a sharded batch as a whole
            shards = load_shards(session, dag_id=dag_id, run_id=run_id, task_id=task_id)
            if shards:
                return _html(sharded_batch_html(f"{dag_id} / {run_id} / {task_id}", shards))
        if found is None:
            return _html(pages.not_found(f"{where}: no Gradient figures (not a Gradient task, or it has not "
                                         "pushed its XCom yet)."))
        return _html(pages.task_page(where, *found))

    return app


app = create_app()
