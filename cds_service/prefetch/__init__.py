"""Prefetch: use what the EHR sent, fetch what it did not, say exactly what could not be had."""
