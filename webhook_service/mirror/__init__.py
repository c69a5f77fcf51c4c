"""The core every mirrored Clerk resource shares: versioned writes, tombstones, dedupe,
batch deletion (``versioned.py``) and reconcile (``reconcile.py``), over plain records
(``records.py``). A resource declares its collection, key and field map; it does not
copy this code."""
