"""Rule matches to CDS Hooks 2.0 cards."""
