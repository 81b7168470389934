"""CDS Hooks 2.0 service: hip flexion weakness work-up and red flags."""

__version__ = "0.1.0"
