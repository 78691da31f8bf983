"""GET /evidence and /evidence/<recommendation-id>: why a card says what it says.

Every card links here (``links``, type ``absolute``), so the card itself stays short. The page is
written from the loaded knowledge, never by hand, so it cannot drift from what the service does:
when the rule fires and when it does not (its conditions), the rationale, every citation with its
link, and the knowledge version. Server-rendered, autoescaped, no script, strict CSP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, render_template

from cds_service.http.page_headers import harden_page
from cds_service.knowledge.loader import Knowledge, Recommendation

bp = Blueprint("evidence", __name__, template_folder="templates", static_folder="static",
               static_url_path="/evidence/static")
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")

_OPS = {"eq": "is", "ne": "is not", "lt": "is below", "le": "is at most", "gt": "is above",
        "ge": "is at least", "in": "is one of", "not_in": "is none of", "contains": "includes",
        "is_null": "is not recorded", "not_null": "is recorded", "is_false": "is not the case"}


def _fact_words(name: str) -> str:
    words = name.replace("_", " ")
    if words.startswith("has "):
        return f"{words[4:]} on record"
    return words


def condition_text(node: Mapping[str, Any]) -> str:
    """One leaf condition in words: its reviewer-written description, else the fact and test."""
    if node.get("description"):
        return str(node["description"])
    if "not" in node and set(node) <= {"not", "description"}:
        return f"not: {condition_text(node['not'])}"
    words = _fact_words(str(node.get("fact", "")))
    op = node.get("op", "is_true")
    if op == "is_true":
        return words
    value = node.get("value")
    shown = ", ".join(map(str, value)) if isinstance(value, list) else value
    return f"{words} {_OPS.get(op, op)}{'' if shown is None else f' {shown}'}"


def condition_tree(node: Mapping[str, Any]) -> dict[str, Any]:
    """{"text": ..., "children": [...]} for the template's nested list."""
    for key, label in (("all", "all of these"), ("any", "any of these")):
        if key in node:
            text = node.get("description") or label
            return {"text": text, "children": [condition_tree(c) for c in node[key]]}
    if "not" in node and not node.get("description"):
        inner = condition_tree(node["not"])
        if inner["children"]:
            return {"text": f"none of: {inner['text']}", "children": inner["children"]}
        return {"text": f"not: {inner['text']}", "children": []}
    return {"text": condition_text(node), "children": []}


def not_firing(node: Mapping[str, Any]) -> list[str]:
    """When the card stays silent: any one of the top-level conditions not met."""
    parts = node.get("all", [node])
    return [condition_tree(part)["text"] for part in parts]


def recommendation_view(rec: Recommendation) -> dict[str, Any]:
    return {
        "id": rec.id,
        "hook": rec.hook,
        "title": rec.title,
        "indicator": rec.indicator,
        "per_order": rec.per_selected_order,
        "fires": condition_tree(rec.when_data),
        "silent": not_firing(rec.when_data),
        "rationale": [" ".join(p.split()) for p in rec.rationale.split("\n\n") if p.strip()],
        "primary": rec.source,
        "citations": rec.citations,
    }


def _knowledge() -> Knowledge:
    return current_app.extensions["cds"].knowledge


def _secure(response: Response) -> Response:
    return harden_page(response, CSP)


@bp.get("/evidence")
def index() -> Response:
    knowledge = _knowledge()
    by_id: dict[str, list[Recommendation]] = {}
    for rec in sorted(knowledge.recommendations, key=lambda r: (r.hook, r.rank, r.id)):
        by_id.setdefault(rec.id, []).append(rec)
    html = render_template("evidence_index.html", entries=by_id, version=knowledge.version,
                           sources=sorted(knowledge.sources.values(), key=lambda s: s.label))
    return _secure(Response(html, mimetype="text/html"))


@bp.get("/evidence/<recommendation_id>")
def page(recommendation_id: str) -> Response:
    knowledge = _knowledge()
    recs = [r for r in knowledge.recommendations if r.id == recommendation_id]
    if not recs:
        abort(404)
    views = [recommendation_view(r) for r in sorted(recs, key=lambda r: r.hook,
                                                     reverse=True)]
    html = render_template("evidence.html", id=recommendation_id, views=views,
                           version=knowledge.version)
    return _secure(Response(html, mimetype="text/html"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
