"""``kgpu lint``: GPU requests in workload manifests that Kubernetes or kgpu would reject or mis-schedule.

Example::

    docs = load_documents("job.yaml", text)
    findings = [f for d in docs for p in pod_templates(d) for f in lint_pod(p, LintContext())]
"""

from kgpu.lint.manifests import Document, PodTemplate, load_documents, pod_templates
from kgpu.lint.rules import GPU_TAINT, Finding, LintContext, Severity, Taint, lint_pod

__all__ = [
    "GPU_TAINT",
    "Document",
    "Finding",
    "LintContext",
    "PodTemplate",
    "Severity",
    "Taint",
    "lint_pod",
    "load_documents",
    "pod_templates",
]
