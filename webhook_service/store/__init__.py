"""Persistence shared by every resource: the client and its bounds (``mongo.py``), the
errors callers answer 503 for (``errors.py``), the index plan carried out
(``indexes.py``), the event log (``eventlog.py``) and what a deletion erases
(``erasure.py``). The versioned core is ``mirror/``; each resource's store composes it."""
