"""GET /preview: see the cards as an EHR sidebar would show them.

Server-rendered HTML and a little JavaScript (``static/preview.js``), no build step:

- ``GET  /preview``                    fixture scenarios (name + description) and a textarea;
- ``GET  /preview/fixtures/<name>``    a fixture's request, dates materialised with the app clock;
- ``POST /preview/render``             ``{"cards": [...]}`` -> ``{"html": ...}``: cards rendered
  server-side with autoescaped templates; ``detail`` markdown rendered by markdown-it-py (raw HTML
  off) and sanitised by nh3; only http(s) URLs become links. A member of the wrong type (a
  number for ``suggestions``, an object for ``summary``) is a 400 naming the member.

The page POSTs the request to the real ``/cds-services/{id}`` endpoint (same origin), so what it
shows is what an EHR gets. It sends no JWT: use it where CDS_AUTH=off. Off with CDS_PREVIEW=false.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nh3
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
)
from markdown_it import MarkdownIt

from cds_service.fixtures import FIXTURES_DIR, fixture_paths, materialize
from cds_service.http.errors import error_response
from cds_service.http.page_headers import harden_page
from cds_service.validation.request import RequestError, check

bp = Blueprint("preview", __name__, template_folder="templates", static_folder="static",
               static_url_path="/preview/static")
MAX_CARDS = 200
PREVIEW_SCHEMA = "preview-render.schema.json"
INDICATORS = ("critical", "warning", "info")
_SEVERITY = {name: i for i, name in enumerate(INDICATORS)}
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_MARKDOWN.enable("table")
_ALLOWED_TAGS = {"p", "br", "strong", "em", "b", "i", "code", "pre", "blockquote", "ul", "ol",
                 "li", "a", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody",
                 "tr", "th", "td", "del", "sup", "sub"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def render_markdown(text: str) -> str:
    """Markdown to HTML that is safe to insert: no raw HTML, only http(s)/mailto links."""
    html = _MARKDOWN.render(text or "")
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )


def safe_url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def card_view(card: Any) -> dict[str, Any]:
    """A card reduced to strings and lists the template can show (the input is untrusted)."""
    card = card if isinstance(card, dict) else {}
    indicator = _text(card.get("indicator"))
    source = card.get("source") if isinstance(card.get("source"), dict) else {}
    topic = source.get("topic") if isinstance(source.get("topic"), dict) else {}
    suggestions = []
    for s in card.get("suggestions") or []:
        if not isinstance(s, dict):
            continue
        actions = []
        for a in s.get("actions") or []:
            if isinstance(a, dict):
                resource = a.get("resource") if isinstance(a.get("resource"), dict) else {}
                actions.append({
                    "type": _text(a.get("type")),
                    "target": _text(resource.get("resourceType") or a.get("resourceId")),
                    "description": _text(a.get("description")),
                })
        suggestions.append({"label": _text(s.get("label")),
                            "recommended": s.get("isRecommended") is True, "actions": actions})
    links = [
        {"label": _text(link.get("label")), "url": safe_url(link.get("url")),
         "type": _text(link.get("type"))}
        for link in card.get("links") or [] if isinstance(link, dict)
    ]
    reasons = [
        _text(r.get("display") or r.get("code"))
        for r in card.get("overrideReasons") or [] if isinstance(r, dict)
    ]
    return {
        "indicator": indicator,
        "indicator_class": indicator if indicator in (*INDICATORS, "hard-stop") else "unknown",
        "summary": _text(card.get("summary")),
        "detail_html": render_markdown(_text(card.get("detail"))),
        "recommendation": _text(topic.get("code")),
        "source_label": _text(source.get("label")),
        "source_url": safe_url(source.get("url")),
        "selection": _text(card.get("selectionBehavior")),
        "suggestions": suggestions,
        "links": links,
        "override_reasons": reasons,
    }


def fixtures_root() -> Path:
    return Path(current_app.config.get("CDS_PREVIEW_FIXTURES_DIR") or FIXTURES_DIR)


def list_fixtures() -> dict[str, dict[str, Any]]:
    """name ("patient-view/<stem>") -> summary; files that do not parse are left out."""
    root = fixtures_root()
    found: dict[str, dict[str, Any]] = {}
    for path in fixture_paths(root) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            hook = str(data["hook"])
            expected = [e for e in data.get("expected") or [] if isinstance(e, dict)]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        name = str(path.relative_to(root).with_suffix(""))
        severities = [e.get("indicator") for e in expected if e.get("indicator") in _SEVERITY]
        found[name] = {
            "name": name,
            "title": path.stem,
            "hook": hook,
            "description": str(data.get("description", "")),
            "expected": expected,
            "top": min(severities, key=_SEVERITY.__getitem__) if severities else "none",
            "path": path,
        }
    return dict(sorted(found.items(), key=lambda kv: (kv[1]["hook"], kv[0])))


def _secure(response: Response) -> Response:
    return harden_page(response, CSP)


@bp.get("/preview")
def page() -> Response:
    runtime = current_app.extensions["cds"]
    services = [{"id": s.id, "hook": s.hook, "title": s.title}
                for s in runtime.knowledge.services.values()]
    fixtures = list(list_fixtures().values())
    html = render_template("preview.html", services=services, fixtures=fixtures,
                           auth_required=runtime.settings.auth == "required")
    return _secure(Response(html, mimetype="text/html"))


@bp.get("/preview/fixtures/<path:name>")
def fixture(name: str) -> Response:
    entry = list_fixtures().get(name)
    if entry is None:
        abort(404)
    runtime = current_app.extensions["cds"]
    data = json.loads(entry["path"].read_text(encoding="utf-8"))
    service = next((s.id for s in runtime.knowledge.services.values() if s.hook == entry["hook"]),
                   None)
    return _secure(jsonify({
        "name": name,
        "service": service,
        "description": entry["description"],
        "expected": entry["expected"],
        "request": materialize(data["request"], runtime.clock()),
    }))


@bp.post("/preview/render")
def render() -> Response:
    body = request.get_json(silent=True)
    cards = body.get("cards") if isinstance(body, dict) else None
    if not isinstance(cards, list):
        return _secure(error_response(400, "invalid-request", 'send {"cards": [...]}'))
    try:
        # The shape first (lists are lists, text is text): a number where the template loops
        # over a list was a TypeError and a 500. The message names the member, never its value.
        check(PREVIEW_SCHEMA, body)
    except RequestError as exc:
        return _secure(error_response(exc.status, exc.code, exc.message))
    views = [card_view(c) for c in cards[:MAX_CARDS]]
    html = render_template("preview_cards.html", cards=views)
    return _secure(jsonify({"html": html, "count": len(views)}))


def init_app(app: Flask) -> None:
    if not app.extensions["cds"].settings.preview_enabled:
        return
    app.register_blueprint(bp)
