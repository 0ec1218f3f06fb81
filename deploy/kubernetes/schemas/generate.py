#!/usr/bin/env python3
"""Generates the JSON Schemas the manifest check validates KServe's custom resources against (check-jsonschema).

KServe's CRDs are too large to vendor whole (the InferenceService CRD is 1 MB of embedded pod specs), so the
schemas are derived from KServe's own Python SDK, which KServe generates from the same Go types as its CRDs: each
model class's `openapi_types` (field types) and `attribute_map` (JSON names), the Kubernetes types they embed from
the official Kubernetes Python client, and the fields whose setters refuse None (required). Every object is closed
(`additionalProperties: false`), as `kubectl apply --validate=strict` treats unknown fields.

Usage: python3 generate.py KSERVE_WHEEL KUBERNETES_WHEEL   (writes *.json beside this file)
Pinned: kserve 0.21.0, kubernetes 36.0.0 (the wheels `pip download --no-deps` fetches).
"""
import ast
import json
import re
import sys
import zipfile
from pathlib import Path

ROOTS = {
    "clusterservingruntime-v1alpha1.json": ("V1alpha1ClusterServingRuntime", "serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
    "inferenceservice-v1beta1.json": ("V1beta1InferenceService", "serving.kserve.io/v1beta1", "InferenceService"),
}


def classes(wheel, package):
    """Class name → (properties {json name: type string}, required json names) of every model module."""
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not (name.startswith(f"{package}/models/") and name.endswith(".py")):
                continue
            source = z.read(name).decode()
            for node in ast.parse(source).body:
                if not isinstance(node, ast.ClassDef):
                    continue
                types = attrs = None
                for item in node.body:
                    if isinstance(item, ast.Assign) and isinstance(item.targets[0], ast.Name):
                        if item.targets[0].id == "openapi_types":
                            types = ast.literal_eval(item.value)
                        elif item.targets[0].id == "attribute_map":
                            attrs = ast.literal_eval(item.value)
                if types is None or attrs is None:
                    continue
                required = {attrs[a] for a in types if re.search(rf"and {a} is None:\s*# noqa: E501\s*raise ValueError", source)}
                out[node.name] = ({attrs[a]: t for a, t in types.items()}, required)
    return out


def schema_of(type_name, known, defs):
    if type_name in ("str", "date", "datetime"):
        return {"type": "string"}
    if type_name == "int":
        return {"type": "integer"}
    if type_name == "float":
        return {"type": "number"}
    if type_name == "bool":
        return {"type": "boolean"}
    if type_name == "object":
        return {}
    if type_name.endswith("Quantity") and type_name not in known:  # a Kubernetes quantity: "500m", "1Gi" or a number
        return {"type": ["string", "number"]}
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        return {"type": "array", "items": schema_of(m.group(1), known, defs)}
    m = re.fullmatch(r"dict[(\[](\w+), (.+)[)\]]", type_name)
    if m:
        return {"type": "object", "additionalProperties": schema_of(m.group(2), known, defs)}
    if type_name not in known:
        # The SDK names some shared types under the other API version (V1alpha1WorkerSpec is V1beta1WorkerSpec).
        # Go-style names of Kubernetes types (K8sIoApiAutoscalingV2HorizontalPodAutoscalerBehavior) are the client's
        # V2HorizontalPodAutoscalerBehavior.
        other = re.sub(r"^V1(alpha|beta)1", lambda m: "V1beta1" if m.group(1) == "alpha" else "V1alpha1", type_name)
        go = re.fullmatch(r"K8sIoApi[A-Z][a-z]+(V\d+(?:alpha\d+|beta\d+)?)(\w+)", type_name)
        if go:
            other = go.group(1) + go.group(2)
        if other not in known and type_name.startswith("Knative"):
            return {"$comment": f"{type_name}: a Knative type (status only), not checked"}
        if other not in known:
            raise SystemExit(f"unknown type {type_name}")
        type_name = other
    if type_name not in defs:
        defs[type_name] = None  # placeholder against recursion
        props, required = known[type_name]
        d = {"type": "object", "additionalProperties": False, "properties": {k: schema_of(t, known, defs) for k, t in props.items()}}
        if required:
            d["required"] = sorted(required)
        defs[type_name] = d
    return {"$ref": f"#/definitions/{type_name}"}


def main():
    kserve, kubernetes = sys.argv[1], sys.argv[2]
    known = classes(kubernetes, "kubernetes/client")
    known.update(classes(kserve, "kserve"))
    for file, (root, api_version, kind) in ROOTS.items():
        defs = {}
        schema_of(root, known, defs)
        top = defs[root]
        top["properties"]["apiVersion"] = {"const": api_version}
        top["properties"]["kind"] = {"const": kind}
        top["required"] = sorted(set(top.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
        doc = {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$comment": f"Generated by generate.py from the kserve 0.21.0 and kubernetes 36.0.0 Python SDKs: {kind} ({api_version}).",
            "$ref": f"#/definitions/{root}",
            "definitions": defs,
        }
        (Path(__file__).parent / file).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(file, len(defs), "definitions")


if __name__ == "__main__":
    main()
