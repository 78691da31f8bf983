"""JSON Schema validation of what comes in (hook requests, feedback) and goes out (cards)."""
