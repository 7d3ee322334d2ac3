"""The `weave` command: a thin client of the router's local API, plus launch/stop of the daemon."""
