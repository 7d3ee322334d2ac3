"""Mesh control plane: handshake, framing, crypto, topology gossip and routes.

Everything in this package is free of I/O: objects take bytes/events and return bytes/actions.
The asyncio adapter lives in :mod:`weavenet.weaver`.
"""
