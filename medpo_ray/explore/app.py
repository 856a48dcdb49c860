"""The explorer's web app (Starlette): a static page plus a small JSON API over one run directory.

Everything served is either one of the page's own files (a fixed list, no path from the request reaches
the file system) or computed from the run: audit rows found by exact step and record id, images rendered
from the dataset record of such a row. Untrusted text (answers, reports, critic output) leaves as JSON
strings and the page inserts it with textContent, never as markup; the Content-Security-Policy allows
only this server's own script, so an answer holding <script> stays text. With a token (required for any
address but loopback), every request must carry it: a bearer header, the `token` query parameter, or
the cookie the page gets when opened with ?token=...
"""
from __future__ import annotations

import hmac
import json
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from medpo_ray.explore.images import corrupted_png, overlay_png
from medpo_ray.explore.reviews import ReviewError, ReviewLog
from medpo_ray.explore.run_data import RunData

STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
CURVES = ("loss", "loss_pref", "loss_vis", "loss_kl", "reward_acc_pref", "reward_acc_vis", "delta_pref",
          "delta_vis", "pairs_per_s", "staleness_max", "sync_s", "grad_norm")
_SEARCHED = ("record_id", "y0", "y_plus", "y_minus", "critic_reason", "edit_kinds")
_SECURITY = {"Content-Security-Policy": "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
                                        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
             "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
_COOKIE = "medpo_explore_token"


def _static(name: str) -> Response:
    body = resources.files("medpo_ray.explore").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name])


def _not_found() -> Response:
    return PlainTextResponse("not found", status_code=404)


class _Guard(BaseHTTPMiddleware):
    """Security headers on every response; the token on every request when one is set."""

    def __init__(self, app, token: str | None):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next):
        given = None
        if self.token:
            auth = request.headers.get("authorization", "")
            given = (auth[7:] if auth.lower().startswith("bearer ") else None) or request.query_params.get("token") \
                or request.cookies.get(_COOKIE)
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                response = PlainTextResponse("a token is required", status_code=401)
                response.headers.update(_SECURITY)
                return response
        response = await call_next(request)
        response.headers.update(_SECURITY)
        if self.token and request.query_params.get("token") == given:
            response.set_cookie(_COOKIE, self.token, httponly=True, samesite="strict")
        return response


def _pair_view(row: dict) -> dict:
    view = {k: row.get(k) for k in ("step", "record_id", "policy_version", "branch", "verdict", "critic",
                                    "critic_reason", "rejection", "trained", "y0", "y_plus", "y_minus",
                                    "critic_raw", "critic_seconds", "edit_kinds", "corruption_mode",
                                    "corruption_region")}
    for side in ("spans_plus", "spans_minus"):
        try:
            view[side] = json.loads(row.get(side) or "[]")
        except ValueError:
            view[side] = []
    return view


def _summary_row(row: dict) -> dict:
    return {k: row.get(k) for k in ("step", "record_id", "branch", "verdict", "edit_kinds", "rejection", "trained",
                                    "policy_version")} | {"critic_reason": (row.get("critic_reason") or "")[:120]}


def create_app(run_dir: str | Path, token: str | None = None) -> Starlette:
    """The explorer over `run_dir`."""
    run = RunData(run_dir)
    reviews = ReviewLog(run.dir)

    async def page(request: Request) -> Response:
        return _static("index.html")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        return _static(name) if name in STATIC and name != "index.html" else _not_found()

    async def overview(request: Request) -> Response:
        steps = [s | ({"pairs_per_s": s["pairs"] / s["step_s"]} if s.get("step_s") else {}) for s in run.steps()]
        summary_path = run.dir / "summary.json"
        return JSONResponse({
            "run": run.dir.name, "config": run.config(),
            "curves": {k: [[s["step"], s[k]] for s in steps if isinstance(s.get(k), (int, float))] for k in CURVES},
            "rejections": [[s["step"], s.get("rejections") or {}] for s in steps],
            "pair_kinds": [[s["step"], s.get("pair_kinds") or {}] for s in steps],
            "audit_steps": run.audit_steps(),
            "summary": json.loads(summary_path.read_text()) if summary_path.is_file() else None,
            "reviews": reviews.summary()})

    async def pairs(request: Request) -> Response:
        q = request.query_params
        rows = run.all_rows()
        options = {"steps": run.audit_steps(), "branches": sorted({r["branch"] for r in rows if r.get("branch")}),
                   "kinds": sorted({k for r in rows for k in (r.get("edit_kinds") or "").split(",") if k}),
                   "reasons": sorted({r["rejection"] for r in rows if r.get("rejection")})}
        if q.get("step"):
            rows = [r for r in rows if str(r["step"]) == q["step"]]
        if q.get("branch"):
            rows = [r for r in rows if r.get("branch") == q["branch"]]
        if q.get("kind"):
            rows = [r for r in rows if q["kind"] in (r.get("edit_kinds") or "").split(",")]
        if q.get("reason"):
            rows = [r for r in rows if r.get("rejection") == q["reason"]]
        if q.get("q"):  # a finding, a word of an answer, a counterfactual key: any text of the row
            needle = q["q"].lower()
            rows = [r for r in rows if any(needle in str(r.get(k) or "").lower() for k in _SEARCHED)]
        if q.get("show") == "pairs":
            rows = [r for r in rows if r.get("branch")]
        elif q.get("show") == "rejected":
            rows = [r for r in rows if r.get("rejection")]
        current = reviews.current()
        return JSONResponse({"options": options, "rows": [
            _summary_row(r) | {"marks": sorted({m.mark for m in current.get((r["step"], r["record_id"]), {}).values()})}
            for r in rows]})

    def _row(request: Request) -> dict | None:
        try:
            step = int(request.path_params["step"])
        except ValueError:
            return None
        return run.row(step, request.path_params["record_id"])

    async def pair(request: Request) -> Response:
        row = _row(request)
        if row is None:
            return _not_found()
        record = run.record(row["record_id"])
        step = next((s for s in run.steps() if s["step"] == row["step"]), {})
        marks = reviews.current().get((row["step"], row["record_id"]), {})
        return JSONResponse(_pair_view(row) | {
            "prompt": record.prompt if record else None, "reference": record.target if record else None,
            "has_image": record is not None, "has_region": bool(record and (record.lesion_mask or record.boxes)),
            "step_margins": {k: step.get(k) for k in ("delta_pref", "delta_vis", "reward_acc_pref", "reward_acc_vis")},
            "marks": [vars(m) for m in marks.values()]})

    async def image(request: Request) -> Response:
        row = _row(request)
        which = request.path_params["which"]
        record = run.record(row["record_id"]) if row is not None else None
        if record is None or which not in ("x", "xt"):
            return _not_found()
        png = overlay_png(record) if which == "x" else corrupted_png(record, run.config().get("corruption"))
        return Response(png, media_type="image/png") if png else _not_found()

    async def review_list(request: Request) -> Response:
        return JSONResponse({"marks": [vars(m) for m in reviews.all()], "summary": reviews.summary()})

    async def review_add(request: Request) -> Response:
        try:
            body = await request.json()
            step, record_id = int(body["step"]), str(body["record_id"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "body: expected JSON with step, record_id, mark, reviewer, note"}, 400)
        if run.row(step, record_id) is None:
            return JSONResponse({"error": f"no pair {record_id!r} at step {step}"}, 404)
        try:
            reviews.add(step, record_id, str(body.get("mark", "")), str(body.get("reviewer", "")),
                        str(body.get("note", "")))
        except ReviewError as e:
            return JSONResponse({"error": str(e)}, 400)
        return JSONResponse({"summary": reviews.summary()})

    routes = [Route("/", page), Route("/static/{name}", static), Route("/api/overview", overview),
              Route("/api/pairs", pairs), Route("/api/pair/{step}/{record_id:path}", pair),
              Route("/img/{step}/{which}/{record_id:path}", image),
              Route("/api/reviews", review_list, methods=["GET"]), Route("/api/reviews", review_add, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(_Guard, token=token)])
