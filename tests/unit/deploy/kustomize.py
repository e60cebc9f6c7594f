"""A small offline renderer for the kustomizations in deploy/k8s: the subset they use, no more.

Supported: `resources` (YAML files and directories holding a kustomization.yaml, rendered
recursively) and `namespace` (set on every namespaced object). Any other field raises, so a
kustomization that starts to rely on more (patches, generators, images...) fails the tests
until this renderer learns it: what the tests validate is what `kubectl apply -k` applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}

Obj = dict[str, Any]


class UnsupportedKustomization(ValueError):
    """The kustomization uses a field this renderer does not implement."""


def load_documents(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def render(directory: Path) -> list[Obj]:
    """The objects `kustomize build directory` produces, for the supported subset."""
    kfile = directory / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise UnsupportedKustomization(f"{kfile}: unsupported fields {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        objects += render(target) if target.is_dir() else load_documents(target)
    namespace = spec.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in seen:  # kustomize refuses an id twice
            raise UnsupportedKustomization(f"{directory}: {key} appears twice")
        seen.add(key)
    return objects
