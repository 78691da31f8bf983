"""Links the service adds to cards beyond a recommendation's own: the SMART timeline app.

Kept apart from cards.py so that each kind of link is one small function the pipeline applies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SMART_LAUNCH_PATH = "/app/launch.html"


def add_timeline_link(cards: Iterable[dict[str, Any]], public_base_url: str, label: str) -> None:
    """Give every card a CDS Hooks ``smart`` link that launches the foot-drop timeline app.

    The EHR launches it with its own ``iss`` and ``launch``; the URL is absolute because the EHR
    resolves it, not the service."""
    url = public_base_url.rstrip("/") + SMART_LAUNCH_PATH
    for card in cards:
        links = card.setdefault("links", [])
        if not any(link.get("type") == "smart" and link.get("url") == url for link in links):
            links.append({"label": label, "url": url, "type": "smart"})
