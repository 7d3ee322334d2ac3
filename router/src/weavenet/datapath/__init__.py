"""Overlay data plane: sleeve codec, replay window, MAC learning, forwarding decisions (pure), and the
threads that move frames between the TAP device and UDP (``engine``) plus the fast-path manager."""
