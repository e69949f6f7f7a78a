"""Outputs of the ``svr`` metric beyond its values: figures (adjacency heatmaps, SVR graph), the GraphML and
node-link JSON exports, and the report writing both next to the Markdown (the generic ``export`` hook)."""

from __future__ import annotations

import io
import json
import random
import xml.etree.ElementTree as ET

import matplotlib
import pytest
import torch
from torch import nn

from suite.cli import main
from suite.metrics import METRICS
from suite.metrics.svr.export import GRAPHML_NS, svr_exports
from suite.metrics.svr.plots import MAX_DRAWN_EDGES, edge_segments, internal_dims_box, svr_figures
from suite.metrics.svr.representation import SvrParams, compute_svr, svr_values

matplotlib.use("Agg")

NS = {"g": GRAPHML_NS}


def _values(model: nn.Module, **params) -> dict:
    """``svr`` values as the report reads them back (through JSON)."""
    return json.loads(json.dumps(svr_values(compute_svr(model), SvrParams(**params))))


@pytest.fixture(scope="module")
def mlp_values() -> dict:
    """An MLP with a planted 4-dimensional shared subspace between consecutive maps: many significant edges."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 6))
    with torch.no_grad():
        basis = torch.linalg.qr(torch.randn(16, 16))[0][:, :4]
        net[0].weight += 3 * basis @ torch.randn(4, 12)
        net[2].weight += 3 * basis @ torch.randn(4, 16) + 3 * torch.randn(16, 4) @ basis.T
        net[4].weight += 3 * torch.randn(6, 4) @ basis.T
    return _values(net, tail_p=0.15)


@pytest.fixture(scope="module")
def conv_values() -> dict:
    """Two convs and a linear head; heatmaps pooled to 8 x 8 so the pooled path is drawn."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 12, 3), nn.ReLU(), nn.Conv2d(12, 16, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
    return _values(net, tail_p=0.15, heatmap_size=8)


def _graphml(values: dict) -> ET.Element:
    files = dict(svr_exports(values))
    assert set(files) == {"svr-graph.graphml", "svr-graph.json"}
    return ET.fromstring(files["svr-graph.graphml"].encode("utf-8"))


def _node_data(root: ET.Element) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``{node id: {attr.name: text}}`` and ``{key id: attr.name}``."""
    keys = {k.get("id"): k.get("attr.name") for k in root.findall("g:key", NS)}
    nodes = {
        n.get("id"): {keys[d.get("key")]: d.text for d in n.findall("g:data", NS)}
        for n in root.findall("g:graph/g:node", NS)
    }
    return nodes, keys


# ------------------------------------------------------------------------------------------ GraphML


@pytest.mark.parametrize("which", ["mlp_values", "conv_values"])
def test_graphml_counts_keys_and_endpoints(which, request):
    values = request.getfixturevalue(which)
    root = _graphml(values)
    assert root.tag == f"{{{GRAPHML_NS}}}graphml"
    key_els = root.findall("g:key", NS)
    assert key_els and all(k.get("attr.type") in {"int", "double", "string"} for k in key_els)
    declared = {(k.get("for"), k.get("attr.name")) for k in key_els}
    assert {("node", "singular_value"), ("node", "intensity"), ("edge", "weight"), ("edge", "pair"),
            ("graph", "tail_p"), ("graph", "flatten"), ("node", "layer"), ("node", "index")} <= declared
    nodes, keys = _node_data(root)
    assert len(nodes) == sum(layer["n_neurons"] for layer in values["layers"])
    edges = root.findall("g:graph/g:edge", NS)
    assert len(edges) == sum(len(e) for e in values["edges"])
    assert all(e.get("source") in nodes and e.get("target") in nodes for e in edges)
    used = {d.get("key") for d in root.iter(f"{{{GRAPHML_NS}}}data")}
    assert used <= set(keys)  # every data element refers to a declared key
    graph = root.find("g:graph", NS)
    assert graph.get("edgedefault") == "directed"
    gdata = {keys[d.get("key")]: d.text for d in graph.findall("g:data", NS)}
    assert float(gdata["tail_p"]) == values["tail_p"] and gdata["flatten"] == values["flatten"]


def test_graphml_values_round_trip(mlp_values):
    root = _graphml(mlp_values)
    nodes, keys = _node_data(root)
    # a known singular value: the second spectral neuron of map 1
    node = nodes["L1:2"]
    assert float(node["singular_value"]) == mlp_values["singular_values"][1][1]
    assert int(node["layer"]) == 1 and int(node["index"]) == 2
    assert node["layer_name"] == mlp_values["layers"][1]["name"] and node["kind"] == "fc"
    assert float(node["intensity"]) == mlp_values["node_intensity"][1][1]
    last = len(mlp_values["layers"]) - 1
    assert "intensity" not in nodes[f"L{last}:1"]  # the last map has no next map
    # a known edge: the strongest of pair 1 joins m (map 1) -> n (map 2)
    n, m, a = mlp_values["edges"][1][0]
    (edge,) = [
        e for e in root.findall("g:graph/g:edge", NS) if e.get("source") == f"L1:{m}" and e.get("target") == f"L2:{n}"
    ]
    data = {keys[d.get("key")]: d.text for d in edge.findall("g:data", NS)}
    assert float(data["weight"]) == a and int(data["pair"]) == 1


def test_graphml_reads_with_networkx(mlp_values):
    nx = pytest.importorskip("networkx")
    text = dict(svr_exports(mlp_values))["svr-graph.graphml"]
    g = nx.read_graphml(io.BytesIO(text.encode("utf-8")))
    assert g.is_directed()
    assert g.number_of_nodes() == sum(layer["n_neurons"] for layer in mlp_values["layers"])
    assert g.number_of_edges() == sum(len(e) for e in mlp_values["edges"])
    assert g.nodes["L0:1"]["singular_value"] == mlp_values["singular_values"][0][0]
    assert g.graph["tail_p"] == mlp_values["tail_p"]


def test_node_link_json_agrees_with_graphml(conv_values):
    files = dict(svr_exports(conv_values))
    doc = json.loads(files["svr-graph.json"])
    assert doc["directed"] is True and doc["multigraph"] is False
    assert doc["graph"] == {"tail_p": conv_values["tail_p"], "flatten": conv_values["flatten"]}
    root = ET.fromstring(files["svr-graph.graphml"].encode("utf-8"))
    nodes, _ = _node_data(root)
    assert [n["id"] for n in doc["nodes"]] == list(nodes)
    by_id = {n["id"]: n for n in doc["nodes"]}
    assert by_id["L0:1"]["singular_value"] == conv_values["singular_values"][0][0]
    assert by_id["L0:1"]["kind"] == "conv" and by_id["L2:1"]["kind"] == "fc"
    assert "intensity" in by_id["L0:1"] and "intensity" not in by_id["L2:1"]
    links = {(lk["source"], lk["target"]): lk for lk in doc["links"]}
    ml = {(e.get("source"), e.get("target")) for e in root.findall("g:graph/g:edge", NS)}
    assert set(links) == ml and len(doc["links"]) == sum(len(e) for e in conv_values["edges"])
    for pair, edges in enumerate(conv_values["edges"]):
        for n, m, a in edges:
            link = links[(f"L{pair}:{m}", f"L{pair + 1}:{n}")]
            assert link["weight"] == a and link["pair"] == pair


def test_export_hook_is_registered():
    mdef = METRICS.get("svr")
    assert mdef.export is not None and mdef.plot is not None
    assert METRICS.get("weight_spectrum").export is None


# ------------------------------------------------------------------------------------------ figures


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return buf.getvalue()


@pytest.mark.parametrize("which", ["mlp_values", "conv_values"])
def test_figures_render_to_png(which, request):
    values = request.getfixturevalue(which)
    figs = svr_figures(values)
    assert [t for t, _ in figs] == ["adjacency", "graph"]
    for _, fig in figs:
        data = _png(fig)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_heatmap_marks_sit_at_internal_dims(conv_values):
    assert internal_dims_box(3, 5) == (0.5, 0.5, 5.0, 3.0)
    fig = dict(svr_figures(conv_values))["adjacency"]
    marked = []
    for ax in fig.axes:
        boxes = [p for p in ax.patches if p.get_label() == "internal_dims"]
        if boxes:
            (box,) = boxes
            marked.append((box.get_x(), box.get_y(), box.get_width(), box.get_height()))
            # the image spans the full (unpooled) index range whatever the pooling
            (im,) = ax.get_images()
            assert tuple(im.get_extent()) == (0.5, conv_values["heatmaps"][len(marked) - 1]["shape"][1] + 0.5,
                                              conv_values["heatmaps"][len(marked) - 1]["shape"][0] + 0.5, 0.5)
    assert marked == [internal_dims_box(d_out, d_in) for d_out, d_in in conv_values["internal_dims"]]
    assert any(h["pooled"] for h in conv_values["heatmaps"])
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "mean-pooled" in titles


def test_graph_caps_edges_and_draws_strongest_last():
    """VGG19-sized values (19 pairs, 2000 edges each, 64 x 64 heatmaps): capped, sorted, titled."""
    rng = random.Random(0)
    widths = [64, 64, 128, 128] + [256] * 4 + [512] * 12
    sv = [sorted((rng.lognormvariate(0, 2) for _ in range(w)), reverse=True) for w in widths]
    edges = []
    for i in range(19):
        pair = [[rng.randint(1, widths[i + 1]), rng.randint(1, widths[i]), rng.random()] for _ in range(2000)]
        edges.append(sorted(pair, key=lambda e: -e[2]))  # stored strongest first, as svr_values does
    values = {
        "tail_p": 0.00135,
        "flatten": "svr",
        "total_significant": 50000,
        "layers": [{"name": f"features.{i}", "kind": "conv" if i < 16 else "fc"} for i in range(20)],
        "singular_values": sv,
        "edges": edges,
        "node_intensity": [[rng.random() for _ in range(w)] for w in widths[:-1]],
        "pairs": [
            {"prev": f"features.{i}", "next": f"features.{i + 1}", "internal_dims": [3, 4], "threshold": 0.5}
            for i in range(19)
        ],
        "heatmaps": [
            {"pooled": True, "shape": [widths[i + 1], widths[i]], "values": [[rng.random()] * 64] * 64}
            for i in range(19)
        ],
    }
    segs, coefs = edge_segments(values)
    share = MAX_DRAWN_EDGES // 19
    assert len(segs) == 19 * share <= MAX_DRAWN_EDGES
    assert coefs == sorted(e[2] for pe in edges for e in pe[:share])  # each pair's strongest, strongest last
    n, m, a = edges[0][0]
    assert segs[coefs.index(a)] == ((0.0, sv[0][m - 1]), (1.0, sv[1][n - 1]))
    figs = dict(svr_figures(values))
    graph = figs["graph"]
    ax = graph.axes[0]
    assert ax.get_yscale() == "log"
    assert f"{len(segs)} of 50000 significant edges drawn (38000 stored)" in ax.get_title()
    assert "p = 0.00135" in ax.get_title()
    assert len([a for a in figs["adjacency"].axes if a.get_images()]) >= 19


# ------------------------------------------------------------------------------------------ report


SPEC = """\
name: svrout
reference: "svr outputs test"
tier: smoke
defaults: {device: cpu, seed: 0}
models:
  - {id: cnn, source: builtin, name: cnn, in_channels: 2, channels: [6, 8], num_classes: 4}
metrics:
  - id: graph
    kind: svr
    params: {tail_p: 0.15}
cases:
  matrix: {model: [cnn], metric: [graph]}
"""


def test_report_writes_figures_and_graph_exports(tmp_path, capsys):
    spec = tmp_path / "svrout.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    dirs = ["--runs-dir", str(tmp_path / "runs"), "--baselines-dir", str(tmp_path / "baselines"),
            "--reports-dir", str(tmp_path / "reports")]
    assert main(["run", str(spec), "--run-id", "s1", "--no-progress", *dirs]) == 0
    report_md = tmp_path / "reports" / "svrout.md"
    report_md.unlink()
    assert main(["report", "s1", *dirs]) == 0
    capsys.readouterr()
    report = report_md.read_text(encoding="utf-8")
    folder = tmp_path / "reports" / "svrout"
    for case, prefix in [("cnn/none/graph", "cnn_none_graph")]:  # one case: conv maps and an FC head
        for name in (f"{prefix}-0.png", f"{prefix}-1.png"):
            assert (folder / name).read_bytes()[:4] == b"\x89PNG"
            assert f"(svrout/{name})" in report
        graphml, js = folder / f"{prefix}-svr-graph.graphml", folder / f"{prefix}-svr-graph.json"
        assert f"Graph: [GraphML](svrout/{graphml.name}) · [JSON](svrout/{js.name})" in report
        root = ET.fromstring(graphml.read_bytes())
        doc = json.loads(js.read_text(encoding="utf-8"))
        assert len(root.findall("g:graph/g:node", NS)) == len(doc["nodes"]) == 6 + 8 + 4
        assert {n["kind"] for n in doc["nodes"]} == {"conv", "fc"}
        assert len(root.findall("g:graph/g:edge", NS)) == len(doc["links"])
        assert f"**`{case}`**" in report
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left
