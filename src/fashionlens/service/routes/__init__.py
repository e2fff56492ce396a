"""The HTTP routes, one module per concern, all under /api/v1 except the health checks."""
