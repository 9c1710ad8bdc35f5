"""Check functions by area; each takes :class:`kgpu.doctor.facts.NodeFacts` and returns an Outcome."""
