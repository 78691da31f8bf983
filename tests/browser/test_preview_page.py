"""The preview endpoints without a browser: listing, fixture requests, safe card rendering."""

from __future__ import annotations

import json

import pytest

from cds_service.fixtures import fixture_paths
from cds_service.http.preview import render_markdown

HOSTILE_CARD = {
    "uuid": "u1", "summary": "<script>alert(1)</script>", "indicator": "critical",
    "detail": "**Why** <img src=x onerror=alert(1)> [x](javascript:alert(1)) [ok](https://a.example)",
    "source": {"label": "Src", "url": "javascript:alert(1)"},
    "links": [{"label": "bad", "url": "javascript:alert(2)", "type": "absolute"},
              {"label": "good", "url": "https://b.example", "type": "absolute"}],
    "suggestions": [{"label": "<b>do</b>", "uuid": "s", "actions": [
        {"type": "create", "description": "d", "resource": {"resourceType": "ServiceRequest"}}]}],
    "overrideReasons": [{"code": "c", "display": "<i>no</i>"}],
}


def test_page_lists_every_fixture(client):
    response = client.get("/preview")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    for path in fixture_paths():
        assert f'data-fixture="{path.parent.name}/{path.stem}"' in html
    assert 'src="/preview/static/preview.js"' in html
    assert client.get("/preview/static/preview.js").status_code == 200
    assert client.get("/preview/static/preview.css").status_code == 200


def test_fixture_request_is_materialised(client):
    paths = fixture_paths()
    assert paths, "fixtures to preview"
    name = f"{paths[0].parent.name}/{paths[0].stem}"
    body = client.get(f"/preview/fixtures/{name}").get_json()
    assert body["service"].startswith("foot-drop-")
    assert "$now" not in json.dumps(body["request"])
    assert client.post(f"/cds-services/{body['service']}", json=body["request"]).status_code == 200
    assert client.get("/preview/fixtures/patient-view/no-such-fixture").status_code == 404
    assert client.get("/preview/fixtures/..%2f..%2fpyproject").status_code == 404


def test_render_escapes_and_sanitises(client):
    response = client.post("/preview/render", json={"cards": [HOSTILE_CARD]})
    assert response.status_code == 200
    html = response.get_json()["html"]
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "href=\"javascript" not in html  # the link stays as text, never as a link
    assert "onerror" not in html.replace("onerror=alert(1)&gt;", "")  # only as escaped text
    assert "<img" not in html
    assert "<strong>Why</strong>" in html
    assert 'href="https://a.example"' in html and 'href="https://b.example"' in html
    assert "&lt;b&gt;do&lt;/b&gt;" in html and "&lt;i&gt;no&lt;/i&gt;" in html
    assert 'data-indicator="critical"' in html


def test_render_rejects_other_bodies(client):
    assert client.post("/preview/render", json={"cards": "x"}).status_code == 400
    # A card that is not an object used to be shown as an empty card; it is a 400 now.
    assert client.post("/preview/render", json={"cards": [HOSTILE_CARD, "junk"]}).status_code == 400
    assert client.post("/preview/render", data="x", content_type="text/plain").status_code == 400


def test_markdown_has_no_raw_html():
    assert render_markdown("<b>x</b>") == "<p>&lt;b&gt;x&lt;/b&gt;</p>\n"
    assert 'rel="noopener noreferrer"' in render_markdown("[a](https://x.example)")


@pytest.mark.parametrize("settings_overrides", [{"preview_enabled": False}])
def test_preview_can_be_switched_off(client):
    assert client.get("/preview").status_code == 404
    assert client.post("/preview/render", json={"cards": []}).status_code in (404, 405)
