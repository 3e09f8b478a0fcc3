"""Live migration: move a namespace to another store while it serves traffic.

``prism.migrate(source_url, target_url, namespace)`` opens a :class:`Migration`;
its phases are start (shadow writes begin), backfill, verify, cutover (with a
bounded write fence), rollback, complete and abort. docs/migration.md walks
through one.
"""

from prism.migration.migration import Migration, MigrationRefused, migrate
from prism.migration.router import MigratingBackend, MigrationSettings
from prism.migration.state import Phase

__all__ = ["MigratingBackend", "Migration", "MigrationRefused", "MigrationSettings", "Phase", "migrate"]
