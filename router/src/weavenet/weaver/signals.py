"""Signals between `weave` and a running router (one definition for both ends)."""

import signal

# Stop for a restart (an upgrade): the router shuts down as on SIGTERM, but leaves the fast path's kernel
# state (VXLAN FDB, source-filter peers) forwarding for the next router, which adopts it (dataplane.GRACE).
RESTART_SIGNAL = signal.SIGUSR2
