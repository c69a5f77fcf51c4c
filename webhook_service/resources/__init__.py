"""The Clerk resources the service mirrors, each a declaration over the core in ``mirror/``:
its field map and mapping, its store, and the handlers its event types are dispatched to.
A resource's modules import the core, never another resource's: what one needs of
another (a collection name, a cascade) is wired in ``services.py``."""
