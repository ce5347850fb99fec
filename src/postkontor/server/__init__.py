"""asyncio adapters: listeners, TLS, connection accounting, the running server."""
