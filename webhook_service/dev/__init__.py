"""Development-only code: the local Clerk that ``make run`` starts, the sample users and
events it tells its story with, and the commands that drive it (``send-test-event``,
``dev-token``). Nothing on the production path of a delivery or a sync imports it; the app
only registers the commands.
"""
