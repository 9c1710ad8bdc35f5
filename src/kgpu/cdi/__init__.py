"""CDI (Container Device Interface) specs for the node's GPUs: generate, render, validate.

Example::

    from kgpu.cdi import CdiOptions, generate_spec, render, validate
    result = generate_spec(backend.inventory(), CdiOptions(driver_root="/usr/local/nvidia"))
    text = render(result.spec, "yaml")
    assert validate(result.spec.to_json()).ok
"""

from kgpu.cdi.generate import HOOKS, KIND, STRATEGIES, CdiError, CdiOptions, GeneratedSpec, generate_spec
from kgpu.cdi.spec import (
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    Mount,
    Spec,
    Validation,
    minimum_version,
    render,
    validate,
)

__all__ = [
    "HOOKS",
    "KIND",
    "STRATEGIES",
    "CdiError",
    "CdiOptions",
    "ContainerEdits",
    "Device",
    "DeviceNode",
    "GeneratedSpec",
    "Hook",
    "Mount",
    "Spec",
    "Validation",
    "generate_spec",
    "minimum_version",
    "render",
    "validate",
]
