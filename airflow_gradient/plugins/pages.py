"""The three Gradient pages as HTML: the overview (nav), a DAG's runs (DAG tab) and one task
instance (task-instance tab). Pure: figures in, HTML out; every text from the database is escaped."""

from __future__ import annotations

from functools import cache
from html import escape
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from airflow_gradient.plugins import svg
from airflow_gradient.plugins.summary import (
    Money,
    Overview,
    RunFigures,
    achieved_per_minute,
    timeline_events,
)

PERIODS = (7, 30, 90)
SHARDS = "shards"  # the task tab's map_index for a sharded batch as a whole
STACKED_DAGS = 7  # DAGs drawn in their own colour; the rest are stacked as "other DAGs"

# Airflow's UI shows these pages in an iframe of its own origin: follow its theme when it says one
# (a "dark"/"light" class on its root element), else the browser's prefers-color-scheme (CSS).
_THEME_SCRIPT = (
    "try{var r=window.parent!==window&&window.parent.document.documentElement;"
    "if(r){var d=r.classList.contains('dark')||r.dataset.theme==='dark'||r.style.colorScheme==='dark',"
    "l=r.classList.contains('light')||r.dataset.theme==='light'||r.style.colorScheme==='light';"
    "if(d||l)document.documentElement.dataset.theme=d?'dark':'light';}}catch(e){}"
)


@cache
def _css() -> str:
    return files("airflow_gradient.plugins").joinpath("gradient.css").read_text(encoding="utf-8")


def document(title: str, body: str) -> str:
    """A whole HTML page: the stylesheet inline (nothing fetched from elsewhere)."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_css()}</style><script>{_THEME_SCRIPT}</script></head>"
        f"<body><main>{body}</main></body></html>"
    )


def money_text(money: Money) -> str:
    """``$1.2345``; tokens without a price are said so, never counted as $0."""
    if money.unpriced_tokens and money.unpriced_tokens == money.tokens:
        return f"{money.tokens:,} tokens, price unknown"
    text = svg.dollars(money.usd)
    if money.unpriced_tokens:
        text += f" + {money.unpriced_tokens:,} tokens, price unknown"
    return text


def cost_text(cost_usd: float | None, tokens: int) -> str:
    money = Money()
    money.add(cost_usd, tokens)
    return money_text(money) if tokens or cost_usd is not None else "none"


def _tile(label: str, figure: str, note: str = "", name: str = "") -> str:
    data = f' data-figure="{escape(name)}"' if name else ""
    note_html = f'<div class="unknown">{escape(note)}</div>' if note else ""
    return (f'<div class="tile"{data}><div class="label">{escape(label)}</div>'
            f'<div class="figure">{escape(figure)}</div>{note_html}</div>')


def _money_tile(label: str, money: Money, name: str) -> str:
    if money.tokens and money.unpriced_tokens == money.tokens:
        return _tile(label, "price unknown", f"{money.unpriced_tokens:,} tokens", name)
    note = f"+ {money.unpriced_tokens:,} tokens, price unknown" if money.unpriced_tokens else ""
    return _tile(label, svg.dollars(money.usd), note, name)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def overview_page(ov: Overview, days: int) -> str:
    """The nav page: spend and tokens per day by DAG, models, top DAGs and tasks, 429s, reuse."""
    links = " ".join(
        f'<a href="?days={p}"' + (' aria-current="page"' if p == days else "") + f">{p} days</a>" for p in PERIODS
    )
    labels = [day.strftime("%m-%d") for day in ov.days]
    stacked = ov.dag_ids[:STACKED_DAGS]
    others = ov.dag_ids[STACKED_DAGS:]

    def per_dag(value: str) -> list[svg.Series]:
        def figure(money: Money | None) -> float:
            return 0.0 if money is None else (money.usd if value == "usd" else float(money.tokens))

        def text(moneys: list[Money]) -> str:
            if value != "usd":
                return f"{sum(m.tokens for m in moneys):,}"
            total = Money(sum(m.usd for m in moneys), sum(m.tokens for m in moneys),
                          sum(m.unpriced_tokens for m in moneys))
            return money_text(total) if total.tokens else "-"

        groups = [(dag, [dag]) for dag in stacked] + ([(f"{len(others)} other DAGs", others)] if others else [])
        series = []
        for name, dags in groups:
            moneys = [[m for dag in dags if (m := ov.per_day[d].get(dag)) is not None] for d in ov.days]
            series.append(svg.Series(name, [sum(figure(m) for m in day) for day in moneys],
                                     [text(day) for day in moneys]))
        return series

    tiles = "".join([
        _money_tile("Spend", ov.total, "spend"),
        _tile("Tokens", f"{ov.total.tokens:,}", name="tokens"),
        _tile("429 responses", f"{ov.rate_limited:,}", name="rate-limited"),
        _tile("Gradient tasks", f"{ov.tasks:,}", name="tasks"),
        _tile("Reused items", f"{ov.reused_items:,}", f"{ov.tokens_saved:,} tokens saved", "reused"),
        _money_tile("Saved by reuse", ov.saved, "saved"),
    ])
    unpriced_note = ""
    if ov.total.unpriced_tokens:
        unpriced_note = (f'<p class="unknown">{ov.total.unpriced_tokens:,} tokens had no price: they are in the '
                         "token charts and tables marked \"price unknown\", not in the dollar figures.</p>")
    models = sorted(ov.by_model.items(), key=lambda item: (-item[1].tokens, item[0]))
    top_dags, top_tasks = ov.top_dags(), ov.top_tasks()
    body = [
        f"<h1>Gradient</h1><p class=\"muted\">Spend, tokens and rate limits of the Gradient tasks of the "
        f"DAGs you may read, over the last {days} days (by task start, UTC).</p>",
        f'<nav class="period" aria-label="Period">{links}</nav>',
        f'<div class="tiles">{tiles}</div>{unpriced_note}',
        '<div class="grid2">',
        svg.stacked_bars("Spend per day (USD), by DAG", labels, per_dag("usd"), svg.dollars, kind="spend-per-day",
                         total_column=not ov.total.unpriced_tokens),
        svg.stacked_bars("Tokens per day, by DAG", labels, per_dag("tokens"), kind="tokens-per-day"),
        svg.hbars("Tokens by model", [m for m, _ in models], [float(m.tokens) for _, m in models],
                  texts=[f"{m.tokens:,} tokens, {money_text(m) if m.tokens else ''}" for _, m in models],
                  kind="models"),
        svg.stacked_bars("429 responses per day", labels,
                         [svg.Series("429s", [float(ov.rate_limited_per_day[d]) for d in ov.days])], kind="429-per-day",
                         total_column=False),
        svg.hbars("Top DAGs by spend", [d for d, _ in top_dags], [m.usd for _, m in top_dags],
                  texts=[money_text(m) for _, m in top_dags], kind="top-dags"),
        svg.hbars("Top tasks by spend", [f"{d}.{t}" for (d, t), _ in top_tasks], [m.usd for _, m in top_tasks],
                  texts=[money_text(m) for _, m in top_tasks], kind="top-tasks"),
        "</div>",
        "<h2>DAGs</h2>",
        _dag_table(ov),
    ]
    return document("Gradient", "".join(body))


def _dag_table(ov: Overview) -> str:
    rows = "".join(
        f'<tr><th scope="row"><a href="dags/{quote(dag, safe="")}">{escape(dag)}</a></th>'
        f"<td>{escape(money_text(money))}</td><td>{money.tokens:,}</td></tr>"
        for dag, money in ov.top_dags(count=len(ov.by_dag))
    )
    return ('<div class="wide"><table><thead><tr><th scope="col">DAG</th><th scope="col">spend</th>'
            f'<th scope="col">tokens</th></tr></thead><tbody>{rows}</tbody></table></div>')


def dag_page(dag_id: str, runs: list[RunFigures]) -> str:
    """The DAG tab: each run's cost, tokens, items, failures, 429s and wall time."""
    labels = [run.started.strftime("%m-%d %H:%M") if run.started else run.run_id for run in runs]
    total = Money()
    for run in runs:
        total.usd += run.money.usd
        total.tokens += run.money.tokens
        total.unpriced_tokens += run.money.unpriced_tokens
    tiles = "".join([
        _money_tile("Spend", total, "spend"),
        _tile("Tokens", f"{total.tokens:,}", name="tokens"),
        _tile("Runs", f"{len(runs):,}", name="runs"),
        _tile("Items", f"{sum(r.items for r in runs):,}", name="items"),
        _tile("Failed items", f"{sum(r.failures for r in runs):,}", name="failures"),
        _tile("429 responses", f"{sum(r.rate_limited for r in runs):,}", name="rate-limited"),
    ])
    rows = [[run.run_id, run.started.isoformat(timespec="seconds") if run.started else "-",
             money_text(run.money), f"{run.money.tokens:,}", f"{run.items:,}", f"{run.failures:,}",
             f"{run.rate_limited:,}", _duration(run.wall_time_s)] for run in runs]
    body = [
        f"<h1>Gradient: {escape(dag_id)}</h1><p class=\"muted\">Run by run: the Gradient tasks of each run "
        "added up (wall time: first Gradient task start to last end).</p>",
        f'<div class="tiles">{tiles}</div>',
        '<div class="grid2">',
        svg.stacked_bars("Cost per run (USD)", labels, [svg.Series("cost", [r.money.usd for r in runs],
                                                                   [money_text(r.money) for r in runs])],
                         svg.dollars, kind="cost-per-run", total_column=False),
        svg.stacked_bars("Tokens per run", labels, [svg.Series("tokens", [float(r.money.tokens) for r in runs])],
                         kind="tokens-per-run", total_column=False),
        svg.stacked_bars("Items per run", labels,
                         [svg.Series("succeeded or done", [float(r.items - r.failures) for r in runs]),
                          svg.Series("failed", [float(r.failures) for r in runs])], kind="items-per-run"),
        svg.stacked_bars("Wall time per run (s)", labels,
                         [svg.Series("wall time", [r.wall_time_s or 0.0 for r in runs])], kind="wall-time-per-run",
                         total_column=False),
        "</div><h2>Runs</h2>",
        '<div class="wide">' + svg.table(["run", "started (UTC)", "cost", "tokens", "items", "failed", "429s",
                                          "wall time"], rows) + "</div>",
    ]
    return document(f"Gradient: {dag_id}", "".join(body))


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [pair for key, inner in value.items() for pair in _flatten(inner, f"{prefix}{key}.")]
    if isinstance(value, list):
        return [(prefix.rstrip("."), f"{len(value)} entries")]
    return [(prefix.rstrip("."), "-" if value is None else str(value))]


def task_page(where: str, key: str, value: dict[str, Any]) -> str:
    """The task-instance tab: a batch's timeline and manifest, or a single request's figures."""
    if "counts" in value:
        return document(f"Gradient: {where}", _batch_body(where, key, value))
    usage = value.get("usage") or {}
    tiles = "".join([
        _tile("Cost", cost_text(value.get("cost_usd"), int(usage.get("total_tokens") or 0)), name="cost"),
        _tile("Tokens", f"{int(usage.get('total_tokens') or 0):,}", name="tokens"),
        _tile("Finish reason", str(value.get("finish_reason") or "-"), name="finish-reason"),
        _tile("Model", str(value.get("model") or "-"), name="model"),
    ])
    rows = [[name.replace("_", " "), f"{int(count or 0):,}"] for name, count in usage.items()]
    body = (f"<h1>Gradient request</h1><p class=\"muted\">{escape(where)}</p><div class=\"tiles\">{tiles}</div>"
            "<h2>Usage</h2>" + svg.table(["", "tokens"], rows)
            + "<h2>Reply</h2>" + svg.table(["", "value"], [[k, v] for k, v in _flatten(
                {k: value.get(k) for k in ("id", "model", "status", "finish_reason", "cost_usd", "try_number")})]))
    return document(f"Gradient: {where}", body)


def _batch_body(where: str, key: str, manifest: dict[str, Any]) -> str:
    counts, usage = manifest.get("counts") or {}, manifest.get("usage") or {}
    requests, reused = manifest.get("requests") or {}, manifest.get("reused") or {}
    pacing = manifest.get("pacing") or {}
    tiles = "".join([
        _tile("Items", f"{int(manifest.get('total') or 0):,}",
              f"{counts.get('succeeded', 0)} succeeded, {counts.get('failed', 0)} failed, "
              f"{counts.get('skipped', 0)} skipped", "items"),
        _tile("Cost", cost_text(manifest.get("cost_usd"), int(usage.get("total_tokens") or 0)), name="cost"),
        _tile("Tokens", f"{int(usage.get('total_tokens') or 0):,}", name="tokens"),
        _tile("Requests", f"{int(requests.get('sent') or 0):,}", f"{requests.get('retries', 0)} retries", "requests"),
        _tile("429 responses", f"{int(requests.get('rate_limited') or 0):,}", name="rate-limited"),
        _tile("Reused", f"{int(reused.get('items') or 0):,}", name="reused"),
        _tile("Pacing", str(pacing.get("source") or "-"), name="pacing"),
        _tile("Wall time", _duration(manifest.get("wall_time_s")), name="wall-time"),
    ])
    failed_note = ('<p class="unknown">This batch failed its max_failed_fraction: the figures are those of its '
                   "manifest XCom.</p>") if key == "manifest" else ""
    shard = manifest.get("shard") or {}
    if shard:
        failed_note += (f'<p class="muted">Shard {int(shard.get("index", 0))} of {int(shard.get("count", 0))}: '
                        f'<a href="?map_index={SHARDS}" data-link="shards">the whole batch</a> (every shard '
                        "merged, their timelines on one clock).</p>")
    samples = [s for s in manifest.get("timeline") or [] if isinstance(s, dict)]
    charts = '<p class="muted">No timeline: this manifest was written before timelines.</p>'
    job_note = ('<p class="muted">A Batch Inference job: one sample per status poll (its requests done); '
                "Gradient paces the job, so no limit is drawn.</p>") if manifest.get("mode") == "batch_job" else ""
    if samples:
        times = [float(s.get("t", 0.0)) for s in samples]
        # Seconds for a short batch, minutes for a longer one.
        scale, unit = (1.0, "s") if times[-1] < 120 else (60.0, "min")
        minutes = [t / scale for t in times]
        markers = [svg.Marker(t / scale, kind, label) for t, kind, label in timeline_events(samples)]
        charts = (
            job_note + '<div class="grid2">'
            + svg.lines("Requests per minute: achieved and the limit in force", minutes,
                        [svg.Series("achieved req/min", achieved_per_minute(samples)),
                         svg.Series("limit req/min", [s.get("requests_per_minute") for s in samples])],
                        markers=markers, x_label=lambda m: f"{m:.1f} {unit}", kind="requests-per-minute",
                        dashed=["limit req/min"])
            + svg.lines("Items done over time", minutes,
                        [svg.Series("items done", [float(s.get("done") or 0) for s in samples])],
                        x_label=lambda m: f"{m:.1f} {unit}", kind="items-done")
            + "</div>"
            + '<p class="legend-markers"><span class="m429">| 429 response(s)</span>'
              '<span class="mpause">¦ pause</span></p>'
        )
    manifest_rows = _flatten({k: v for k, v in manifest.items() if k not in ("results", "timeline", "parts")})
    manifest_rows.append(("parts", f"{len(manifest.get('parts') or [])} files"))
    manifest_rows.append(("timeline", f"{len(samples)} samples"))
    return (f"<h1>Gradient batch</h1><p class=\"muted\">{escape(where)}</p>{failed_note}"
            f'<div class="tiles">{tiles}</div><h2>Timeline</h2>{charts}<h2>Manifest</h2>'
            '<div class="wide">' + svg.table(["field", "value"], manifest_rows) + "</div>")


def not_found(what: str) -> str:
    return document("Gradient", f"<h1>Gradient</h1><p>{escape(what)}</p>")
