"""Graph exports of the ``svr`` metric: GraphML and node-link JSON, from its JSON values.

One node per spectral neuron, id ``L{layer}:{index}`` (``layer`` the 0-based position of the map in
the chain, ``index`` the 1-based spectral neuron, ordered by decreasing singular value), with the
attributes ``layer`` (int), ``layer_name``, ``kind`` (``fc``/``conv``), ``index`` (int),
``singular_value`` and, for maps that have a next map, ``intensity`` (node colour intensity, Sec. 3.2).
One directed edge per *stored* significant edge (the strongest ``max_edges`` of each pair): source the
previous map's neuron ``m``, target the next map's neuron ``n``, attributes ``weight`` (the adjacency
coefficient ``a[n, m]``) and ``pair`` (int, the 0-based layer pair: ``L{pair} -> L{pair + 1}``).
Graph attributes: ``tail_p`` (the significance level) and ``flatten``.

The JSON is the node-link form read by ``networkx.node_link_graph(data, edges="links")`` and d3:
``{"directed", "multigraph", "graph", "nodes": [{"id", ...}], "links": [{"source", "target", ...}]}``.
No networkx dependency: GraphML is written with :mod:`xml.etree.ElementTree`.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

__all__ = ["GRAPHML_NS", "node_id", "svr_exports", "svr_graph", "svr_graphml", "svr_node_link"]

GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_SCHEMA = f"{GRAPHML_NS} {GRAPHML_NS}/1.0/graphml.xsd"

# (for, attr.name, attr.type); the key id is the attr.name prefixed by its domain
_KEYS = [
    ("graph", "tail_p", "double"),
    ("graph", "flatten", "string"),
    ("node", "layer", "int"),
    ("node", "layer_name", "string"),
    ("node", "kind", "string"),
    ("node", "index", "int"),
    ("node", "singular_value", "double"),
    ("node", "intensity", "double"),
    ("edge", "weight", "double"),
    ("edge", "pair", "int"),
]


def node_id(layer: int, index: int) -> str:
    """``L{layer}:{index}``: ``layer`` the 0-based map position, ``index`` the 1-based spectral neuron."""
    return f"L{layer}:{index}"


def svr_graph(values: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(graph attributes, nodes, links)`` of the SVR graph; each node/link a dict of its attributes."""
    sv = values.get("singular_values") or []
    layers = values.get("layers") or []
    intensity = values.get("node_intensity") or []
    nodes: list[dict[str, Any]] = []
    for i, sigma in enumerate(sv):
        info = layers[i] if i < len(layers) else {}
        inten = intensity[i] if i < len(intensity) else None
        for k, s in enumerate(sigma):
            node = {
                "id": node_id(i, k + 1),
                "layer": i,
                "layer_name": str(info.get("name", i)),
                "kind": str(info.get("kind", "")),
                "index": k + 1,
                "singular_value": float(s),
            }
            if inten is not None and k < len(inten):
                node["intensity"] = float(inten[k])
            nodes.append(node)
    links: list[dict[str, Any]] = []
    for pair, edges in enumerate(values.get("edges") or []):
        for n, m, a in edges:
            links.append(
                {"source": node_id(pair, int(m)), "target": node_id(pair + 1, int(n)), "weight": float(a), "pair": pair}
            )
    graph = {"tail_p": values.get("tail_p"), "flatten": values.get("flatten")}
    return graph, nodes, links


def _text(value: Any, kind: str) -> str:
    if kind == "int":
        return str(int(value))
    if kind == "double":
        return repr(float(value))  # shortest repr: round-trips exactly
    return str(value)


def svr_graphml(values: dict[str, Any]) -> str:
    """The SVR graph as a GraphML document (UTF-8 text with an XML declaration)."""
    graph, nodes, links = svr_graph(values)
    # plain tags with the namespace declared as attributes: ElementTree's default_namespace option
    # refuses unqualified attributes, and register_namespace would change process-wide state
    root = ET.Element("graphml", {"xmlns": GRAPHML_NS, "xmlns:xsi": _XSI, "xsi:schemaLocation": _SCHEMA})
    types: dict[tuple[str, str], str] = {}
    for domain, name, kind in _KEYS:
        attrs = {"id": f"{domain[0]}_{name}", "for": domain, "attr.name": name, "attr.type": kind}
        ET.SubElement(root, "key", attrs)
        types[(domain, name)] = kind
    g = ET.SubElement(root, "graph", {"id": "svr", "edgedefault": "directed"})

    def data(parent: ET.Element, domain: str, attrs: dict[str, Any]) -> None:
        for name, value in attrs.items():
            kind = types.get((domain, name))
            if kind is None or value is None:
                continue
            ET.SubElement(parent, "data", {"key": f"{domain[0]}_{name}"}).text = _text(value, kind)

    data(g, "graph", graph)
    for node in nodes:
        el = ET.SubElement(g, "node", {"id": node["id"]})
        data(el, "node", node)
    for link in links:
        src, dst = link["source"], link["target"]
        el = ET.SubElement(g, "edge", {"id": f"{src}-{dst}", "source": src, "target": dst})
        data(el, "edge", link)
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def svr_node_link(values: dict[str, Any]) -> str:
    """The SVR graph as node-link JSON (``networkx.node_link_graph(data, edges="links")``, d3)."""
    graph, nodes, links = svr_graph(values)
    doc = {"directed": True, "multigraph": False, "graph": graph, "nodes": nodes, "links": links}
    return json.dumps(doc, separators=(",", ":")) + "\n"


def svr_exports(values: dict[str, Any]) -> list[tuple[str, str]]:
    """``[("svr-graph.graphml", text), ("svr-graph.json", text)]`` (nothing without singular values)."""
    if not values.get("singular_values"):
        return []
    return [("svr-graph.graphml", svr_graphml(values)), ("svr-graph.json", svr_node_link(values))]
