"""Reading FHIR R4 data: unwrap prefetch values, keep the patient's own resources, validate."""
