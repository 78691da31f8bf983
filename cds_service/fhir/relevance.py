"""Drop resources no rule can use before they are validated: the cost of a request should grow
with the data the rules need, not with the size of the chart.

Fact extraction reads clinical resources only through value sets (``cards/valuesets``), so a
resource whose coded or text members match no value set at all cannot change any fact. The filter
therefore checks each resource, by type, against the merged codes and text patterns of *every*
value set (not only the ones ``facts.yaml`` names today: a fact added tomorrow keeps its data):

- Observation: ``code``, ``valueCodeableConcept``, ``valueString`` (text-only findings such as
  saddle anaesthesia are read from valueString), ``component.code`` (manual-muscle-test panels),
  ``bodySite`` (a generic strength row naming its muscle there);
- Condition: ``code``, and ``note`` text (text-only findings are read from notes);
- ServiceRequest/Procedure/DiagnosticReport ``code``, DeviceRequest ``codeCodeableConcept``,
  MedicationRequest ``medicationCodeableConcept``, ImagingStudy ``procedureCode`` and
  ``description``; a DeviceRequest or MedicationRequest that names its device or drug by
  reference instead (often a contained resource) is kept, fact extraction resolves it;
- Patient and any other type: kept.

If fact extraction starts reading another member through a value set, add it here;
``tests/fhir/test_relevance.py`` checks that the facts are the same with and without the filter.
A member of an unexpected type keeps the resource: validation decides what happens to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.knowledge.loader import Knowledge
from cds_service.knowledge.valuesets import ValueSetIndex

# Coded members fact extraction reads, per resource type.
_ORDER_CONCEPTS = {
    "ServiceRequest": "code",
    "DeviceRequest": "codeCodeableConcept",
    "MedicationRequest": "medicationCodeableConcept",
    "Procedure": "code",
    "DiagnosticReport": "code",
}
# The member that names the same thing by reference, where the type has one.
_REFERENCE_ALTERNATIVES = {
    "DeviceRequest": "codeReference",
    "MedicationRequest": "medicationReference",
}


class RelevanceFilter:
    def __init__(self, knowledge: Knowledge) -> None:
        self.index = ValueSetIndex(knowledge.valuesets.values())

    def __call__(self, resource: Mapping[str, Any]) -> bool:
        index = self.index
        resource_type = resource.get("resourceType")
        if resource_type == "Observation":
            return (
                index.matches_concept(resource.get("code"))
                or index.matches_text(resource.get("valueString"))
                or index.matches_concept(resource.get("valueCodeableConcept"))
                or self._components_match(resource.get("component"))
                or index.matches_concept(resource.get("bodySite"))
            )
        if resource_type == "Condition":
            return index.matches_concept(resource.get("code")) or self._notes_match(
                resource.get("note")
            )
        if not isinstance(resource_type, str):
            return True
        field = _ORDER_CONCEPTS.get(resource_type)
        if field is not None:
            concept = resource.get(field)
            reference = _REFERENCE_ALTERNATIVES.get(resource_type)
            if reference and not concept and resource.get(reference) is not None:
                return True  # a referenced (often contained) Device or Medication
            return index.matches_concept(concept)
        if resource_type == "ImagingStudy":
            codes = resource.get("procedureCode")
            if codes is not None and not isinstance(codes, list):
                return True
            return any(index.matches_concept(c) for c in codes or ()) or index.matches_text(
                resource.get("description")
            )
        return True

    def _components_match(self, components: Any) -> bool:
        """A manual-muscle-test panel names its muscles in ``component.code``."""
        if not components:
            return False
        if not isinstance(components, list):
            return True
        return any(
            not isinstance(c, Mapping) or self.index.matches_concept(c.get("code"))
            for c in components
        )

    def _notes_match(self, notes: Any) -> bool:
        """Each note is read on its own, as fact extraction reads them."""
        if not notes:
            return False
        if not isinstance(notes, list):
            return True
        for note in notes:
            if isinstance(note, Mapping):
                text = note.get("text", "")
                if not isinstance(text, str):
                    return True
                if self.index.matches_text(text):
                    return True
        return False
