"""``kgpu validate``: the whole chain from kernel driver to a GPU pod, stopping at the first broken link.

Example::

    from kgpu.validate import ValidateOptions, validate, exit_code
    results = validate(ValidateOptions(), backend_opener)
    for r in results:
        print(r.step, r.name, r.status, r.detail)
"""

from kgpu.validate.result import STEP_NAMES, STEPS, Status, Step, StepResult, exit_code
from kgpu.validate.runner import ValidateOptions, parse_duration, parse_skip, validate

__all__ = [
    "STEPS",
    "STEP_NAMES",
    "Status",
    "Step",
    "StepResult",
    "ValidateOptions",
    "exit_code",
    "parse_duration",
    "parse_skip",
    "validate",
]
