"""`kgpu lint` on a 10 000-document file: the whole command, and the YAML parsing alone with each parser.

The file is what `helm template` of a large platform gives: Deployments, Jobs, Services and
ConfigMaps, a quarter of the workloads asking for GPUs (some fractionally, some without tolerations).

    .venv/bin/python bench/lint.py            # 10 000 documents
    .venv/bin/python bench/lint.py 2000
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from kgpu.lint import load_documents

DOCUMENTS = 10_000


def manifest(count: int) -> str:
    docs = []
    for i in range(count):
        kind = ("Deployment", "Service", "ConfigMap", "Job")[i % 4]
        if kind == "Service":
            docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\n"
                        f"spec:\n  selector: {{app: a{i}}}\n  ports:\n  - {{port: 80, targetPort: 8080}}\n")
        elif kind == "ConfigMap":
            docs.append(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\n"
                        f"data:\n  config.yaml: |\n    replicas: {i}\n    name: app-{i}\n")
        else:
            gpu = ("1", "0.5", "2", None)[(i // 4) % 4]
            resources = (f"        resources:\n          limits: {{nvidia.com/gpu: {gpu!r}, cpu: '2'}}\n"
                         if gpu else "        resources:\n          limits: {cpu: '1', memory: 1Gi}\n")
            template = (f"    metadata:\n      labels: {{app: a{i}}}\n    spec:\n      containers:\n"
                        f"      - name: main\n        image: registry.example.com/app:{i}\n"
                        f"        args: [--port, '8080', --name, app-{i}]\n{resources}")
            if kind == "Deployment":
                docs.append(f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: dep-{i}}}\nspec:\n"
                            f"  replicas: 2\n  selector:\n    matchLabels: {{app: a{i}}}\n  template:\n{template}")
            else:
                docs.append(f"apiVersion: batch/v1\nkind: Job\nmetadata: {{name: job-{i}}}\nspec:\n  template:\n"
                            + template.replace("    spec:\n", "    spec:\n      restartPolicy: Never\n"))
    return "---\n".join(docs)


def parse_seconds(text: str, loader: type) -> float:
    start = time.perf_counter()
    list(yaml.load_all(text, Loader=loader))
    return time.perf_counter() - start


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else DOCUMENTS
    text = manifest(count)
    assert len(load_documents("bench.yaml", text)) == count
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(text)
        kgpu = Path(sys.executable).parent / "kgpu"
        start = time.perf_counter()
        done = subprocess.run([str(kgpu), "lint", str(path)], capture_output=True, text=True)
        whole = time.perf_counter() - start
    print(f"{'what':<52} {'seconds':>8}")
    print(f"{f'kgpu lint, {count} documents ({len(text) >> 10} KiB)':<52} {whole:>8.2f}")
    rows = [("  parsing with libyaml (yaml.CSafeLoader, used)", getattr(yaml, "CSafeLoader", None)),
            ("  parsing with pure Python (yaml.SafeLoader, fallback)", yaml.SafeLoader)]
    for label, loader in rows:
        if loader is not None:
            print(f"{label:<52} {parse_seconds(text, loader):>8.2f}")
    print(done.stderr.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
