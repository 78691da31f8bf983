"""HTTP layer: routes, errors, CORS, auth. No clinical logic lives here."""
