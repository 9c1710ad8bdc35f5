#!/usr/bin/env python3
"""Extract the flags of NVIDIA's binaries from their Go source, for kgpu's flag-table tests.

    git clone --branch v0.20.0 https://github.com/NVIDIA/k8s-device-plugin /tmp/k8s-device-plugin
    python3 scripts/nvidia_flags.py /tmp/k8s-device-plugin > tests/fixtures/nvidia/flags-v0.20.json
    python3 scripts/nvidia_flags.py --config-keys /tmp/k8s-device-plugin > tests/fixtures/nvidia/config-keys-v0.20.json

The second form lists every key of NVIDIA's config file (``api/config/v1``: the json tags from ``Config``
down, embedded structs inlined) with its Go type.

Reads every ``&cli.<Kind>Flag{ ... }`` literal in the programs' ``main.go`` (and GFD's
``internal/flags``): name, aliases, environment variables in order, kind and default.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

PROGRAMS = {
    "nvidia-device-plugin": ["cmd/nvidia-device-plugin/main.go"],
    "gpu-feature-discovery": ["cmd/gpu-feature-discovery/main.go", "internal/flags/kubeclient.go",
                              "internal/flags/node.go"],
    "config-manager": ["cmd/config-manager/main.go"],
}
KINDS = {"String": "string", "Bool": "bool", "StringSlice": "strings", "IntSlice": "ints", "Generic": "duration",
         "Int": "int", "Float64": "float"}
CONSTANTS = {
    "spec.MigStrategyNone": "none", "spec.DeviceIDStrategyUUID": "uuid",
    "spec.DefaultCDIAnnotationPrefix": "cdi.k8s.io/",
    "spec.DefaultNvidiaCTKPath": "/usr/bin/nvidia-ctk", "spec.DefaultContainerDriverRoot": "/driver-root",
    "spec.AllocationPolicyDistributed": "distributed", "pluginapi.KubeletSocket":
    "/var/lib/kubelet/device-plugins/kubelet.sock", "DefaultOneshot": False, "DefaultSendSignal": True,
    "DefaultSignal": 1, "DefaultProcessToSignal": "nvidia-device-plugin",
    "DefaultConfigLabel": "nvidia.com/device-plugin.config",
    "cli.NewStringSlice(string(spec.DeviceListStrategyEnvVar))": ["envvar"],
    "spec.NewDurationValue(60 * time.Second)": "60s",
}
_FLAG = re.compile(r"&cli\.(\w+)Flag\{(.*?)\n\t*\}", re.S)
_FIELD = re.compile(r"^\s*(\w+):\s*(.*?),?\s*$", re.M)


def _value(text: str) -> object:
    text = text.strip().rstrip(",")
    if text.startswith('"'):
        return json.loads(text)
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text) if "." in text else int(text)
    return CONSTANTS.get(text, text)


def flags(source: str) -> list[dict[str, object]]:
    out = []
    for kind, body in _FLAG.findall(source):
        fields = {k: v for k, v in _FIELD.findall(body)}
        entry: dict[str, object] = {"name": _value(fields["Name"]), "kind": KINDS[kind]}
        entry["aliases"] = re.findall(r'"([^"]+)"', fields.get("Aliases", ""))
        entry["env"] = re.findall(r'"([^"]+)"', fields.get("EnvVars", ""))
        entry["default"] = _value(fields["Value"]) if "Value" in fields else None
        out.append(entry)
    return out


_STRUCT = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.S | re.M)
_JSON_FIELD = re.compile(r"^\s*(\w+)?\s+([\w.*\[\]]+)\s+`json:\"([^\",]+)")
_EMBEDDED = re.compile(r"^\s*(\w+)\s*$")


def config_keys(root: Path) -> dict[str, str]:
    """Every key path of NVIDIA's config file (``flags.plugin.deviceListStrategy``) → its Go type."""
    structs: dict[str, str] = {}
    for path in sorted((root / "api/config/v1").glob("*.go")):
        if not path.name.endswith("_test.go"):
            structs |= dict(_STRUCT.findall(path.read_text()))
    keys: dict[str, str] = {}

    def walk(struct: str, prefix: str) -> None:
        for line in structs[struct].splitlines():
            if (embedded := _EMBEDDED.match(line)) and embedded.group(1) in structs:
                walk(embedded.group(1), prefix)
                continue
            field = _JSON_FIELD.match(line)
            if field is None or field.group(3) == "-":
                continue
            go_type, key = field.group(2), prefix + field.group(3)
            inner = go_type.lstrip("*[]")
            before = len(keys)
            if inner in structs:
                walk(inner, key + ".")
            if len(keys) == before:  # a value, or a struct with its own (un)marshalling (ReplicatedDevices)
                keys[key] = go_type

    walk("Config", "")
    return keys


def main() -> None:
    if sys.argv[1] == "--config-keys":
        json.dump(config_keys(Path(sys.argv[2])), sys.stdout, indent=1)
        print()
        return
    root = Path(sys.argv[1])
    result = {program: [f for path in paths for f in flags((root / path).read_text())]
              for program, paths in PROGRAMS.items()}
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
