"""Core services of the ReplyX backend: configuration, database, security, logging."""
