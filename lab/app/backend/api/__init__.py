"""HTTP API routers of the ReplyX backend."""
