"""``kgpu node prepare``: the safe fixes the doctor proposes, planned first and applied atomically.

Planning is pure: :func:`plan_prepare` takes the node's facts and returns the steps that would
change it (blacklist nouveau/nova, persist overlay and br_netfilter, persist the Kubernetes
sysctls, comment swap out of ``/etc/fstab``, add the nvidia runtime to each installed container
runtime through :mod:`kgpu.runtime`). :func:`apply_prepare` writes each step's files with
:func:`kgpu.runtime.apply_plan` (temp file, fsync, rename, ``<file>.kgpu.bak`` backup). A node
that is already prepared yields no steps, so a second run changes nothing.

Example::

    plan = plan_prepare(gather(Path("/"), backend).host)
    for step in plan.steps:
        print(step.title, step.diff())
    apply_prepare(plan)
"""

from kgpu.prepare.plan import PreparePlan, PrepareStep, apply_prepare, plan_prepare

__all__ = ["PreparePlan", "PrepareStep", "apply_prepare", "plan_prepare"]
