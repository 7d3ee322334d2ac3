"""Per-peer health measured by this router, the mesh-wide link view gossiped between routers, and its
renderings (text, Graphviz DOT, SVG). See docs/architecture.md."""
