"""weavenet: a Weave-style overlay network router for Docker hosts."""

__version__ = "0.1.0"
