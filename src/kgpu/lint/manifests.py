"""Workload manifests as Kubernetes reads them: multi-document YAML or JSON, ``List`` objects, and
the pod template inside each workload kind.

Example::

    for doc in load_documents("deploy.yaml", text):
        for pod in pod_templates(doc):
            print(pod.where, [c["name"] for c in pod.containers()])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from kgpu.errors import ConfigError

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


@dataclass(frozen=True, slots=True)
class Document:
    source: str
    """File name as given (``-`` for standard input)."""
    index: int
    """1-based position of the document in its file (a ``List`` item keeps its document's index)."""
    obj: Mapping[str, Any]
    item: int | None = None
    """Position inside a ``List``, if the object came from one."""

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata")
        if isinstance(meta, Mapping):
            return str(meta.get("name") or meta.get("generateName") or "?")
        return "?"

    @property
    def where(self) -> str:
        item = f":items[{self.item}]" if self.item is not None else ""
        return f"{self.source}:doc {self.index}{item}:{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class PodTemplate:
    document: Document
    path: str
    """YAML path of the pod spec inside the object, e.g. ``spec.template.spec``."""
    spec: Mapping[str, Any]

    @property
    def where(self) -> str:
        return self.document.where

    def containers(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(YAML path, container) for every container and init container."""
        for field in ("initContainers", "containers"):
            items = self.spec.get(field)
            if not isinstance(items, list):
                continue
            for i, c in enumerate(items):
                if isinstance(c, Mapping):
                    yield f"{self.path}.{field}[{i}]", c


def load_documents(source: str, text: str) -> list[Document]:
    """Every object in a YAML/JSON stream; ``List`` kinds are unpacked. ConfigError for bad YAML."""

    # libyaml's parser (installed with PyYAML on every platform with wheels) reads a 10 000-document
    # file several times faster than the pure-Python one, with the same safe constructors. A file it
    # refuses is read again by the pure one, whose error mark is the one reported (the two place an
    # error at the end of the text differently); the pure one is also the fallback without libyaml.
    raw_docs: list[Any] | None = None
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            raw_docs = list(yaml.load_all(text, Loader=fast))
        except yaml.YAMLError:
            raw_docs = None
    try:
        if raw_docs is None:
            raw_docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    out: list[Document] = []
    for i, raw in enumerate(raw_docs, start=1):
        if raw is None:
            continue
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: doc {i}: expected a Kubernetes object (a mapping with kind), "
                              f"got {type(raw).__name__}")
        kind = str(raw.get("kind", ""))
        if kind.endswith("List") and isinstance(raw.get("items"), list):
            out.extend(Document(source, i, item, j) for j, item in enumerate(raw["items"]) if isinstance(item, Mapping))
        else:
            out.append(Document(source, i, raw))
    return out


def pod_templates(doc: Document) -> list[PodTemplate]:
    path = POD_SPEC_PATHS.get(doc.kind)
    if path is None:
        return []
    node: Any = doc.obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return []
    return [PodTemplate(doc, ".".join(path), node)]
