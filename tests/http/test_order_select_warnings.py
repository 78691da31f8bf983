"""order-select logs: an invalid selected order is a warning that names the field and carries
the request id; an empty Rx draft (the sandbox fires order-select before a drug is picked) is
not a warning at all."""

from __future__ import annotations

import json
import logging

from cds_service.logs import JsonLineFormatter
from tests.http import builders as b

SERVICE = "/cds-services/foot-drop-order-select"


def _lines(caplog, event: str) -> list[dict]:
    formatter = JsonLineFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.getMessage() == event]


def _medication_request(**members) -> dict:
    return {"resourceType": "MedicationRequest", "id": "rx-1", "status": "draft",
            "intent": "order", "subject": {"reference": f"Patient/{b.PATIENT_ID}"}, **members}


def test_invalid_order_warning_names_the_field_and_the_request(client, caplog) -> None:
    order = _medication_request(medicationCodeableConcept={"text": "dalfampridine 10 mg"},
                                dosageInstruction=[{"timing": 5, "text": "twice daily"}])
    with caplog.at_level(logging.INFO):
        response = client.post(SERVICE, json=b.order_select(orders=[order]),
                               headers={"X-Request-Id": "rx-check-1"})
    assert response.status_code == 200
    (line,) = _lines(caplog, "selected order is not valid FHIR R4; reviewed anyway")
    assert line["level"] == "warning"
    assert line["request_id"] == "rx-check-1"
    assert line["fields"] == ["dosageInstruction.timing"]
    assert line["resource_type"] == "MedicationRequest"
    assert "twice daily" not in json.dumps(line)  # names, never values


def test_empty_rx_draft_is_not_a_warning(client, caplog) -> None:
    with caplog.at_level(logging.INFO):
        response = client.post(SERVICE, json=b.order_select(orders=[_medication_request()]),
                               headers={"X-Request-Id": "rx-empty-1"})
    assert response.status_code == 200
    assert response.get_json()["cards"] == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    (line,) = _lines(caplog, "selected order has no medication yet")
    assert line["request_id"] == "rx-empty-1" and line["level"] == "info"
