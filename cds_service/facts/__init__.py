"""Clinical facts derived once per request from the patient's FHIR data."""
