"""Renderings of the mesh view: text for a terminal, Graphviz DOT, and SVG laid out by Graphviz itself
(`dot -Tsvg`, Debian package graphviz). Styles: fastdp green solid, sleeve blue dashed, encrypted bold with a
lock label, unhealthy orange, broken red dotted; routers show nickname, address and container count."""

from __future__ import annotations

import shutil
import subprocess

from .view import Edge, MeshView, Node

DOT_TIMEOUT = 20.0
MAX_SVG = 16 * 1024 * 1024
STYLE = {  # (colour, style) by what the link is
    "fastdp": ("#2e7d32", "solid"),
    "sleeve": ("#1565c0", "dashed"),
    "unknown": ("#757575", "solid"),
    "unhealthy": ("#ef6c00", "solid"),
    "broken": ("#c62828", "dotted"),
}


def _label(n: Node) -> str:
    return n.nickname or n.name


def _rtt(e: Edge) -> str:
    if e.rtt_ms is None:
        return "-"
    return f"{e.rtt_ms} ms" if e.rtt_ms else "<1 ms"   # summaries carry whole milliseconds


def edge_words(e: Edge) -> str:
    if e.state == "broken":
        return "BROKEN"
    words = [e.datapath, "encrypted" if e.encrypted else "unencrypted" if e.encrypted is False else ""]
    words.append(f"rtt {_rtt(e)}")
    if e.loss_permille:
        words.append(f"loss {e.loss_permille / 10:.1f}%")
    return " ".join(w for w in words if w)


def text(view: MeshView) -> str:
    out = [f"Peers ({len(view.nodes)}):"]
    for n in sorted(view.nodes.values(), key=lambda n: (not n.ours, _label(n))):
        cont = "?" if n.containers is None else str(n.containers)
        out.append(f"  {n.name}({n.nickname})  {n.address or '-':<15}  containers={cont}"
                   + ("  [this host]" if n.ours else ""))
    out.append(f"Links ({len(view.edges)}, {len(view.unhealthy())} unhealthy):")
    nodes = view.nodes
    for e in view.edges:
        mark = "!!" if e.state != "ok" else "  "
        out.append(f"{mark} {_label(nodes[e.a])} <-> {_label(nodes[e.b])}  {edge_words(e)}"
                   + ("  (unhealthy)" if e.state == "unhealthy" else ""))
    return "\n".join(out) + "\n"


def _esc(s: str) -> str:
    """Text inside a DOT double-quoted string (nicknames came over the network: escape everything)."""
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ")


def _q(*lines: str) -> str:
    """A DOT double-quoted string of these lines."""
    return '"' + "\\n".join(_esc(x) for x in lines) + '"'


def dot(view: MeshView) -> str:
    lines = ["graph weave {", '  graph [fontname="DejaVu Sans" overlap=false splines=true bgcolor="white"];',
             '  node [shape=box style="rounded,filled" fillcolor="#eceff1" fontname="DejaVu Sans" fontsize=11];',
             '  edge [fontname="DejaVu Sans" fontsize=9];']
    for n in sorted(view.nodes.values(), key=lambda n: n.name):
        cont = "?" if n.containers is None else str(n.containers)
        label = _q(_label(n), n.address or n.name, f"{cont} container{'' if cont == '1' else 's'}")
        extra = ' fillcolor="#c8e6c9" penwidth=2' if n.ours else ""
        lines.append(f"  {_q(n.name)} [label={label}{extra}];")
    for e in view.edges:
        path = e.datapath if e.datapath in STYLE else "unknown"
        colour = STYLE[e.state if e.state != "ok" else path][0]
        style = STYLE["broken" if e.state == "broken" else path][1]   # the path's style even when unhealthy
        width = 3 if e.encrypted and e.state != "broken" else 1.5
        label = "broken" if e.state == "broken" else f"{e.datapath}{' encrypted' if e.encrypted else ''} {_rtt(e)}"
        lines.append(f"  {_q(e.a)} -- {_q(e.b)} [color={_q(colour)} style={style} penwidth={width} "
                     f"label={_q(label)} fontcolor={_q(colour)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


class RenderError(RuntimeError):
    pass


def svg(dot_source: str) -> bytes:
    """SVG laid out by Graphviz. Raises RenderError with a one-line reason."""
    exe = shutil.which("dot")
    if exe is None:
        raise RenderError("Graphviz is not installed (apt-get install graphviz): 'dot' not found")
    try:
        r = subprocess.run([exe, "-Tsvg"], input=dot_source.encode(), capture_output=True, timeout=DOT_TIMEOUT,
                           check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"Graphviz took over {DOT_TIMEOUT:.0f}s") from None
    if r.returncode != 0 or not r.stdout:
        err = r.stderr.decode(errors="replace").strip().splitlines()
        raise RenderError(f"Graphviz failed: {err[0] if err else f'exit status {r.returncode}'}")
    if len(r.stdout) > MAX_SVG:
        raise RenderError("Graphviz output too large")
    return r.stdout
