"""UI-format workflows (what ComfyUI's frontend saves and the template browser serves) ↔ API-format prompts.

``to_api`` follows the frontend's rules with the live ``/object_info``: widget inputs take the node's
``widgets_values`` in schema order (a ``control_after_generate`` value follows seed-like INT widgets), linked
inputs come from ``links``; Note/MarkdownNote/Reroute nodes are dropped (reroutes are followed).
"""
from __future__ import annotations

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
VIRTUAL_NODES = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
SEED_NAMES = ("seed", "noise_seed")


def _schema_inputs(info: dict) -> list[tuple[str, object, dict]]:
    out = []
    for section in ("required", "optional"):
        for name, spec in info.get("input", {}).get(section, {}).items():
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, kind, opts))
    return out


def is_widget(kind, opts: dict) -> bool:
    return isinstance(kind, list) or kind in WIDGET_TYPES and not opts.get("forceInput")


def has_control_widget(name: str, kind, opts: dict) -> bool:
    return kind == "INT" and (name in SEED_NAMES or bool(opts.get("control_after_generate")))


def widget_names(info: dict) -> list[str]:
    """Names of the values in a node's ``widgets_values``, in order (``<control>`` for control_after_generate)."""
    names = []
    for name, kind, opts in _schema_inputs(info):
        if is_widget(kind, opts):
            names.append(name)
            if has_control_widget(name, kind, opts):
                names.append("<control>")
    return names


def to_api(workflow: dict, object_info: dict) -> dict:
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow.get("links", [])}

    def source(link_id):
        _, from_node, from_slot, *_ = links[link_id]
        node = nodes[from_node]
        if node["type"] == "Reroute":
            return source(node["inputs"][0]["link"])
        return [str(from_node), from_slot]

    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (2, 4):  # muted / bypassed
            continue
        if node["type"] not in object_info:
            raise KeyError(f"node type {node['type']!r} (node {node['id']}) is not installed")
        values = list(node.get("widgets_values") or [])
        inputs = {}
        names = widget_names(object_info[node["type"]])
        for name, value in zip(names, values):
            if name != "<control>":
                inputs[name] = value
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                inputs[slot["name"]] = source(slot["link"])
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title", node["type"])}}
    return prompt


# ------------------------------------------------------------------------------------------- building UI graphs

class UiGraph:
    """Minimal builder of UI-format workflows (used to write the bundled workflows/ files)."""

    def __init__(self):
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def add(self, type_: str, widgets: list | None = None, pos=(0, 0), size=(320, 120), title: str | None = None,
            inputs: list[tuple[str, str]] = (), outputs: list[tuple[str, str]] = (), color: str | None = None,
            models: list[dict] = ()) -> int:
        """A node; ``models`` = ``[{name, url, directory}]`` for the frontend's missing-models dialog."""
        node_id = len(self.nodes) + 1
        node = {"id": node_id, "type": type_, "pos": list(pos), "size": list(size), "flags": {}, "order": node_id - 1,
                "mode": 0, "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets or [])}
        if models:
            node["properties"]["models"] = list(models)
        if title:
            node["title"] = title
        if color:
            node["color"], node["bgcolor"] = color
        self.nodes.append(node)
        return node_id

    def connect(self, src: int, src_slot: int, dst: int, dst_input: str) -> None:
        link_id = len(self.links) + 1
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        slot = next(i for i, x in enumerate(d["inputs"]) if x["name"] == dst_input)
        typ = s["outputs"][src_slot]["type"]
        self.links.append([link_id, src, src_slot, dst, slot, typ])
        s["outputs"][src_slot]["links"].append(link_id)
        d["inputs"][slot]["link"] = link_id

    def to_json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [120, 60]}},
                "version": 0.4}
