"""The ClusterPolicy CustomResourceDefinition, with a structural OpenAPI schema made from the spec's model.

``scripts/gen_chart.py`` writes it into the chart; a test checks it is current. The API server then
refuses a wrong type or an unknown enum value at ``kubectl apply``; what a schema cannot say (an invalid
device-plugin config) the operator reports in the ClusterPolicy's status.
"""

from __future__ import annotations

from typing import Any

from kgpu.operator.policy import GROUP, KIND, PLURAL, VERSION, ClusterPolicySpec

# Open-ended Kubernetes types kept as given (the API server validates them when the DaemonSets are applied).
_OPEN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _structural(defs[node["$ref"].split("/")[-1]], defs)
    any_of = [n for n in node.get("anyOf", []) if n.get("type") != "null"]
    if "anyOf" in node:
        base = {k: v for k, v in node.items() if k not in ("anyOf", "default", "title")}
        if len(any_of) == 1:
            out = _structural({**any_of[0], **base}, defs)
            return out
        types = sorted({n.get("type") for n in any_of})
        if types == ["integer", "string"]:
            return {**_describe(base), "x-kubernetes-int-or-string": True}
        return {**_describe(base), **_OPEN}
    kind = node.get("type")
    out = _describe(node)
    if kind == "object":
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if props:
            out["type"] = "object"
            out["properties"] = {k: _structural(v, defs) for k, v in props.items()}
        elif isinstance(extra, dict) and extra:
            value = _structural(extra, defs)
            if value.get("x-kubernetes-preserve-unknown-fields") or value.get("x-kubernetes-int-or-string"):
                return {**out, **_OPEN}
            out |= {"type": "object", "additionalProperties": value}
        else:
            out |= _OPEN
        return out
    if kind == "array":
        out["type"] = "array"
        items = _structural(node.get("items", {}), defs)
        out["items"] = items or _OPEN
        if "maxItems" in node:
            out["maxItems"] = node["maxItems"]
        return out
    if kind in ("string", "integer", "boolean", "number"):
        out["type"] = kind
        for key in ("enum", "maxLength", "minLength", "minimum", "maximum"):
            if key in node:
                out[key] = node[key]
        if "const" in node:
            out["enum"] = [node["const"]]
        return out
    return {**out, **_OPEN}


def _describe(node: dict[str, Any]) -> dict[str, Any]:
    return {"description": node["description"]} if node.get("description") else {}


def spec_schema() -> dict[str, Any]:
    schema = ClusterPolicySpec.model_json_schema(by_alias=True)
    return _structural(schema, schema.get("$defs", {}))


STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "state": {"type": "string", "enum": ["ready", "notReady", "error", "ignored"]},
        "message": {"type": "string"},
        "namespace": {"type": "string"},
        "gpuNodes": {"type": "integer"},
        "readyNodes": {"type": "integer"},
        "observedGeneration": {"type": "integer"},
        "rollout": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "conditions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": {"type": "string"},
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                    "lastTransitionTime": {"type": "string", "format": "date-time"},
                    "observedGeneration": {"type": "integer"},
                },
            },
        },
        "nodes": {
            "description": "GPU nodes that are not ready (at most 20): the first failing stage and its fix.",
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "stage": {"type": "string"},
                    "message": {"type": "string"},
                    "fix": {"type": "string"},
                },
            },
        },
    },
}


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": "clusterpolicy",
                      "shortNames": ["kgpupolicy"]},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "State", "type": "string", "jsonPath": ".status.state"},
                        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyNodes",
                         "description": "GPU nodes with every stage passing"},
                        {"name": "Nodes", "type": "integer", "jsonPath": ".status.gpuNodes"},
                        {"name": "Message", "type": "string", "jsonPath": ".status.message"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "description": "How kgpu runs on every GPU node of the cluster (one per cluster).",
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": STATUS_SCHEMA,
                            },
                        }
                    },
                }
            ],
        },
    }
