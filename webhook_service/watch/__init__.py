"""The watcher: notices by itself when deliveries are missed, and repairs the data.

Webhooks stop for ordinary reasons (a wrong URL after a deploy, a rotated secret, Svix
giving up after a day or disabling the endpoint after five), and nothing in a webhook
handler can notice its own silence. Every ``WATCH_INTERVAL_S`` one instance of the service
(``lease.py``) lists what Clerk changed since its last pass, repairs what no delivery
brought (``passes.py``), and compares counts to find missed deletions.
"""
