"""Peer TCP sockets as the router tunes them (tune_peer_socket), on real loopback connections.

The kernel, not the router's Python, ends a connection whose peer stopped answering (keepalive and
TCP_USER_TIMEOUT). What must not end one is a peer whose host answers but whose router is starved of CPU
and leaves its socket unread for a while (an overloaded host during a join storm)."""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from collections.abc import Iterator

import pytest

from weavenet.mesh.core import MAX_GOSSIP_BODY, MeshConfig
from weavenet.weaver.peer_transport import set_patience, tune_peer_socket


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    cfg = MeshConfig()
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        sender = socket.create_connection(ls.getsockname())
        receiver, _ = ls.accept()
    with contextlib.closing(sender), contextlib.closing(receiver):
        for s in (sender, receiver):
            tune_peer_socket(s, cfg)
        yield sender, receiver


def test_a_starved_receiver_keeps_the_connection_while_a_gossip_burst_waits_unread(pair):
    sender, receiver = pair
    cfg = MeshConfig()
    burst = b"g" * (2 * MAX_GOSSIP_BODY)      # two of the largest gossip messages, left unread
    sender.setblocking(False)
    sent, error = 0, None
    starved_until = time.monotonic() + 4 * cfg.tcp_user_timeout
    while time.monotonic() < starved_until:   # the receiving router reads nothing meanwhile
        try:
            sent += sender.send(burst[sent:]) if sent < len(burst) else 0
        except BlockingIOError:
            pass
        except OSError as e:
            error = e
            break
        time.sleep(0.01)
    # With the kernel's default buffer the window closes after ~100 KiB and the sender's kernel ends the
    # connection once its data waited tcp_user_timeout on it (ETIMEDOUT), although the receiver answered.
    assert error is None, f"the sender's kernel ended the connection: {error}"
    assert sender.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    assert sent == len(burst)
    receiver.settimeout(5)
    got = 0
    while got < len(burst):
        chunk = receiver.recv(1 << 20)
        assert chunk, "connection closed before the burst arrived"
        got += len(chunk)
    assert got == len(burst)


def test_a_receiver_that_never_reads_still_loses_the_connection_once_its_buffer_is_full(pair):
    """The buffer bounds what an unread peer costs: past it the window closes and the limit applies."""
    sender, _receiver = pair
    sender.setblocking(False)
    chunk = b"x" * (1 << 20)
    deadline = time.monotonic() + 15    # the buffer fills in well under a second; then tcp_user_timeout
    error = None
    while time.monotonic() < deadline:
        try:
            sender.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError as e:
            error = e
            break
    assert error is not None and error.errno == errno.ETIMEDOUT


def test_patience_gives_the_socket_the_patient_kernel_limits_and_takes_them_back(pair):
    sender, _receiver = pair
    cfg = MeshConfig()

    def limits() -> tuple[int, int, int]:
        return (sender.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sender.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sender.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))

    usual = (cfg.tcp_keepalive, 1, int(cfg.tcp_user_timeout * 1000))
    assert limits() == usual
    set_patience(sender, cfg, True)
    assert limits() == (cfg.tcp_keepalive, 1, int(cfg.tcp_user_timeout_patient * 1000))
    set_patience(sender, cfg, False)
    assert limits() == usual


def test_patience_for_a_socket_closed_under_us_is_not_an_error():
    """The adapter applies Patience while other actions wait behind it: a gone socket must not raise."""
    s = socket.socket()
    s.close()
    set_patience(s, MeshConfig(), True)
