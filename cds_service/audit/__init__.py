"""Audit trail, feedback and the database behind them (SQLAlchemy 2, Alembic; SQLite or PostgreSQL).

- ``records``: what one hook call leaves behind (no patient id, token or free text);
- ``writer`` + ``spool``: written off the request path, kept on disk while the store is down;
- ``feedback``: CDS Hooks feedback as real clients send it, idempotent;
- ``repository`` + ``stats`` + ``views``: what clinical safety reviewers query;
- ``replay_cache``: JWT ``jti`` replay detection shared by all workers;
- ``service.AuditTrail``: all of it, built and closed in the app lifespan.

See docs/audit.md.
"""

from cds_service.audit.database import Database, StoreUnavailable
from cds_service.audit.service import AuditTrail

__all__ = ["AuditTrail", "Database", "StoreUnavailable"]
