"""Docker containers on the mesh: `weave run` argument parsing, the Docker client, lifecycle events.

Talks to the Docker Engine through the docker SDK (``docker.from_env()``, so ``DOCKER_HOST`` and
friends are honoured). The router uses it to turn container names into network namespaces and to
follow containers that stop, restart or go away; the CLI uses it for ``weave run``.
"""
