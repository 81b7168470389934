"""Implementer tools behind ``cds-service load-fixtures`` and ``cds-service check``.

They exist so that a site can try the service against a real FHIR server (a local sekmet-fhir, HAPI's
public server, the SMART sandbox) before go-live: load the test patients, then make the hook call an EHR
would make and read the cards in a terminal. They reuse the service's one FHIR client
(``cds_service.fhir``) and its error tree; only the write side (transaction, PUT) lives here, because
the service itself never writes to a FHIR server.
"""
