from tests.http.conftest import (  # noqa: F401  (fixtures)
    app,
    client,
    migrated_database,
    shared_knowledge,
)
