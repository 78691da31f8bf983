"""Expand CDS Hooks 2.0 prefetch templates: ``{{context.<field>}}`` and the user tokens."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

TOKEN = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class UnresolvedToken(ValueError):
    """A template names a value the request does not carry; that key cannot be fetched."""


def token_value(token: str, context: Mapping[str, Any]) -> str:
    if token.startswith("context."):
        value = context.get(token[len("context."):])
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
        raise UnresolvedToken(token)
    if token in USER_TOKENS:
        user = context.get("userId")
        if isinstance(user, str) and "/" in user:
            resource_type, _, user_id = user.partition("/")
            if resource_type == USER_TOKENS[token] and user_id:
                return user_id
        raise UnresolvedToken(token)
    raise UnresolvedToken(token)


def expand(template: str, context: Mapping[str, Any]) -> str:
    """Replace each token, URL-encoding the value so it cannot change the query's shape."""
    return TOKEN.sub(lambda m: quote(token_value(m.group(1), context), safe=""), template)


def tokens(template: str) -> list[str]:
    return [m.group(1) for m in TOKEN.finditer(template)]
