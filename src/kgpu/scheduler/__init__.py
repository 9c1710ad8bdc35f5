"""kgpu's kube-scheduler extender: GPU shares in HAMi's names, placed by policy, recorded on the pod.

* :mod:`.names` — resource names, annotations and policies (HAMi's, unchanged).
* :mod:`.requests` — what a pod asks for; :mod:`.assignment` — what it was given (HAMi's annotation format);
  :mod:`.inventory` — a node's dynamically shared GPUs (the device plugin's node annotation).
* :mod:`.fit` — the pure decision: which GPUs, or why not; node scores.
* :mod:`.state` — pods and nodes from the API server, plus the extender's reservations.
* :mod:`.extender` — filter, prioritize, bind; :mod:`.server` — their HTTP endpoint;
  :mod:`.kube` — the API I/O; :mod:`.metrics` — HAMi's metric names; :mod:`.daemon` — the process.

Example::

    from kgpu.scheduler.fit import place
    from kgpu.scheduler.requests import pod_request
    placement = place(usage, pod_request(pod), "binpack", annotations={})
"""
