"""Errors raised by the protocol state machines; each carries a one-line reason for logs."""


class ProtocolError(Exception):
    """The remote sent something that violates the protocol; drop the connection."""


class HandshakeRefused(ProtocolError):
    """The handshake completed syntactically but the peers must not talk (password, version, self).

    ``output`` holds bytes we still owe the peer (our auth frame), so it can log the reason too."""

    output: bytes = b""
