"""HTTP routes, one blueprint per area. Each is thin: parse, call, translate to a status."""
