"""CDS Hooks 2.0 service: hip flexion weakness work-up and red flags."""

from cds_service import native

__version__ = "0.1.0"

#: Whether the engine's modules run compiled (mypyc) or interpreted; decided before any is imported.
NATIVE = native.activate()
