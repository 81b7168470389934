"""HTML pages for people: the rule a card links to, its value sets, and an index of every rule.

A clinician who clicks the link on a card got a wall of JSON. These pages render the same rule documents
server-side (Jinja2, no JavaScript), readable on a phone, printable, and accessible. ``api.rules`` serves
them when the browser asks for ``text/html``; API clients keep the JSON. This package reads the catalog
and the fixtures; it knows nothing of HTTP, the audit trail or the orchestrator (their data is passed in).
"""
