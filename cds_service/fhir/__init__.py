"""The one FHIR client (``client``) and its error tree (``errors``)."""
