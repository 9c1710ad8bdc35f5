"""The kubelet's PodResources API: which pod and container hold which devices."""
