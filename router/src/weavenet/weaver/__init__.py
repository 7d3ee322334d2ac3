"""The router process: asyncio adapter around the sans-I/O mesh core, persistence, API wiring."""
