"""Local HTTP API (unix socket and 127.0.0.1 only), its client, and the text formats of `weave status`."""
