"""Token expansion for our own fallback queries (checklist P2, P5, P11)."""

from __future__ import annotations

import pytest

from cds_service.prefetch.templates import UnresolvedToken, expand, tokens

CONTEXT = {"patientId": "p1", "userId": "PractitionerRole/role-7", "encounterId": "e-3",
           "selections": ["DeviceRequest/afo-1"], "draftOrders": {"resourceType": "Bundle"}}


@pytest.mark.parametrize("template, expected", [
    ("Patient/{{context.patientId}}", "Patient/p1"),
    ("Encounter/{{ context.encounterId }}", "Encounter/e-3"),
    ("{{context.userId}}", "PractitionerRole%2Frole-7"),
    ("PractitionerRole?_id={{userPractitionerRoleId}}", "PractitionerRole?_id=role-7"),
    ("Condition?patient={{context.patientId}}&_count=200", "Condition?patient=p1&_count=200"),
])
def test_expansion(template, expected):
    assert expand(template, CONTEXT) == expected


@pytest.mark.parametrize("value", ["a&b=c", "a/b", "a?b", "a#b", "a b", "a%2F"])
def test_values_are_url_encoded_so_they_cannot_change_the_query(value):
    expanded = expand("Condition?patient={{context.patientId}}&_count=1",
                      {"patientId": value})
    query = expanded.split("?", 1)[1]
    assert query.count("&") == 1 and "/" not in query and "#" not in expanded
    assert " " not in expanded


@pytest.mark.parametrize("template, context", [
    ("Patient/{{context.patientId}}", {}),
    ("Patient/{{context.patientId}}", {"patientId": ""}),
    ("Patient/{{context.patientId}}", {"patientId": None}),
    ("Encounter/{{context.encounterId}}", {"patientId": "p1"}),
    ("X?y={{context.selections}}", CONTEXT),  # not a primitive
    ("X?y={{context.draftOrders}}", CONTEXT),
    ("X?y={{context.draftOrders.id}}", CONTEXT),  # nested paths are not 2.0 tokens
    ("Practitioner/{{userPractitionerId}}", CONTEXT),  # the user is a PractitionerRole
    ("X?y={{userPractitionerRoleId}}", {"userId": "PractitionerRole/"}),
    ("X?y={{Patient.id}}", CONTEXT),
    ("X?y={{today()}}", CONTEXT),
])
def test_unresolvable_tokens_are_reported(template, context):
    with pytest.raises(UnresolvedToken):
        expand(template, context)


def test_user_tokens_each_match_their_resource_type():
    for user, token in [("Practitioner/1", "userPractitionerId"),
                        ("PractitionerRole/1", "userPractitionerRoleId"),
                        ("Patient/1", "userPatientId"),
                        ("RelatedPerson/1", "userRelatedPersonId")]:
        assert expand(f"X?id={{{{{token}}}}}", {"userId": user}) == "X?id=1"


def test_tokens_lists_every_token():
    assert tokens("A?b={{context.patientId}}&c={{ userPatientId }}") == [
        "context.patientId", "userPatientId"]
