"""Patients and their observations arrive with the data-ingestion work (CSV import, FHIR sync)."""
