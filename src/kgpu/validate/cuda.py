"""Step 4: a real kernel through the CUDA driver API (``libcuda.so.1`` via ctypes), checked per element.

No CUDA toolkit, no framework: the kernel ships as PTX text (:mod:`kgpu.validate.ptx`) and the
driver JIT-compiles it, as ``cuModuleLoadDataEx`` does for any application that carries PTX.
The sequence is the CUDA ``vectorAdd`` sample's: allocate, copy in, launch, copy out, compare,
free, and it prints ``Test PASSED`` per GPU the way the sample does.

Example::

    driver = CudaDriver.load()
    for device in driver.devices():
        print(run_vector_add(driver, device).line)
"""

from __future__ import annotations

import ctypes
import random
from array import array
from dataclasses import dataclass
from pathlib import Path

from kgpu.errors import KgpuError
from kgpu.host.driverroot import CUDA_SONAME, WELL_KNOWN_DRIVER_ROOTS, find_library
from kgpu.validate.ptx import KERNEL_NAME, PtxModule, candidates

ELEMENTS = 50_000
THREADS_PER_BLOCK = 256

_ATTR_CC_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
_ATTR_CC_MINOR = 76
_JIT_INFO_LOG_BUFFER = 3  # CUjit_option values
_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4
_JIT_ERROR_LOG_BUFFER = 5
_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6
_LOG_BYTES = 8192
# Errors after which another PTX target may still load (the JIT refused this one).
_PTX_REFUSED = {
    209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
    218: "CUDA_ERROR_INVALID_PTX",
    222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
}
_CUDA_13 = 13000

_u32, _i32, _u64, _vp = ctypes.c_uint, ctypes.c_int, ctypes.c_uint64, ctypes.c_void_p
_pi32 = ctypes.POINTER(ctypes.c_int)


class CudaLibraryError(KgpuError):
    """``libcuda.so.1`` could not be found or loaded; the message says where kgpu looked."""


class CudaCallError(KgpuError):
    """A driver API call returned an error."""

    def __init__(self, call: str, code: int, name: str, text: str, log: str = "") -> None:
        self.call, self.code, self.error_name, self.log = call, code, name, log
        message = f"{call} failed: {name} ({code}): {text}"
        if log:
            message += f"; JIT log: {log}"
        super().__init__(message)


class _CUctxCreateParams(ctypes.Structure):
    # CUDA 13's cuda.h: both pointers NULL means "a regular context".
    _fields_ = (("execAffinityParams", _vp), ("numExecAffinityParams", _i32), ("cigParams", _vp))


_SIGNATURES: dict[str, tuple[object, ...]] = {
    "cuInit": (_u32,),
    "cuDriverGetVersion": (_pi32,),
    "cuDeviceGetCount": (_pi32,),
    "cuDeviceGet": (_pi32, _i32),
    "cuDeviceGetName": (ctypes.c_char_p, _i32, _i32),
    "cuDeviceGetAttribute": (_pi32, _i32, _i32),
    "cuDeviceGetUuid": (ctypes.c_char_p, _i32),
    "cuDeviceGetUuid_v2": (ctypes.c_char_p, _i32),
    "cuDeviceGetPCIBusId": (ctypes.c_char_p, _i32, _i32),
    "cuCtxCreate_v2": (ctypes.POINTER(_vp), _u32, _i32),
    "cuCtxCreate_v4": (ctypes.POINTER(_vp), ctypes.POINTER(_CUctxCreateParams), _u32, _i32),
    "cuCtxDestroy_v2": (_vp,),
    "cuCtxSynchronize": (),
    "cuModuleLoadDataEx": (
        ctypes.POINTER(_vp),
        ctypes.c_char_p,
        _u32,
        ctypes.POINTER(_i32),
        ctypes.POINTER(_vp),
    ),
    "cuModuleGetFunction": (ctypes.POINTER(_vp), _vp, ctypes.c_char_p),
    "cuModuleUnload": (_vp,),
    "cuMemAlloc_v2": (ctypes.POINTER(_u64), ctypes.c_size_t),
    "cuMemFree_v2": (_u64,),
    "cuMemcpyHtoD_v2": (_u64, _vp, ctypes.c_size_t),
    "cuMemcpyDtoH_v2": (_vp, _u64, ctypes.c_size_t),
    "cuLaunchKernel": (
        _vp,
        _u32,
        _u32,
        _u32,
        _u32,
        _u32,
        _u32,
        _u32,
        _vp,
        ctypes.POINTER(_vp),
        ctypes.POINTER(_vp),
    ),
    "cuGetErrorName": (_i32, ctypes.POINTER(ctypes.c_char_p)),
    "cuGetErrorString": (_i32, ctypes.POINTER(ctypes.c_char_p)),
}


def _candidate_paths(cuda_library: Path | None, driver_root: Path | None) -> tuple[list[str], list[str]]:
    """Paths to try in order, and a description of where kgpu looks (for the error message)."""
    if cuda_library is not None:
        return [str(cuda_library)], [str(cuda_library)]
    if driver_root is not None:
        found = find_library(driver_root, CUDA_SONAME)
        where = [f"driver root {driver_root} (lib64, lib, usr/lib64, usr/lib/<arch>)"]
        return ([str(found)] if found else []), where
    paths = [CUDA_SONAME]
    where = ["the dynamic loader path (LD_LIBRARY_PATH, /etc/ld.so.cache)"]
    for root in WELL_KNOWN_DRIVER_ROOTS:
        lib = find_library(root, CUDA_SONAME)
        if lib is not None:
            paths.append(str(lib))
        where.append(str(root))
    return paths, where


@dataclass(frozen=True, slots=True)
class CudaDevice:
    ordinal: int
    name: str
    uuid: str
    """``GPU-…`` as nvidia-smi prints it (MIG devices: ``MIG-…``)."""
    pci_bus_id: str
    cc_major: int
    cc_minor: int


class CudaDriver:
    """``libcuda.so.1`` loaded with typed signatures; every call raises :class:`CudaCallError` on error."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.lib = lib
        self.path = path
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = list(argtypes)
                fn.restype = ctypes.c_int
        self._initialised = False
        self.version = 0

    @classmethod
    def load(cls, cuda_library: Path | None = None, driver_root: Path | None = None) -> CudaDriver:
        paths, where = _candidate_paths(cuda_library, driver_root)
        errors: list[str] = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError as exc:
                errors.append(str(exc))
                continue
            if not hasattr(lib, "cuInit"):
                errors.append(f"{path} is a shared library but not the CUDA driver (no cuInit)")
                continue
            return cls(lib, path)
        tried = f" ({'; '.join(errors)})" if errors else ""
        raise CudaLibraryError(f"{CUDA_SONAME} could not be loaded; looked in: {', '.join(where)}{tried}")

    def has(self, name: str) -> bool:
        return hasattr(self.lib, name)

    def _error(self, code: int) -> tuple[str, str]:
        name, text = ctypes.c_char_p(), ctypes.c_char_p()
        if (
            self.has("cuGetErrorName")
            and self.lib.cuGetErrorName(code, ctypes.byref(name)) == 0
            and name.value
        ):
            self.lib.cuGetErrorString(code, ctypes.byref(text))
            return name.value.decode(), (text.value or b"").decode()
        return f"CUDA error {code}", "unknown error"

    def call(self, name: str, *args: object, log: ctypes.Array[ctypes.c_char] | None = None) -> None:
        if not self.has(name):
            raise CudaCallError(name, -1, "missing symbol", f"{self.path} does not export {name}")
        code = int(getattr(self.lib, name)(*args))
        if code != 0:
            err_name, text = self._error(code)
            jit_log = log.value.decode(errors="replace").strip() if log is not None else ""
            raise CudaCallError(name, code, err_name, text, jit_log)

    def init(self) -> int:
        """cuInit and the driver's CUDA version (13000 for 13.0)."""
        if not self._initialised:
            self.call("cuInit", 0)
            version = ctypes.c_int()
            self.call("cuDriverGetVersion", ctypes.byref(version))
            self.version = version.value
            self._initialised = True
        return self.version

    def devices(self) -> list[CudaDevice]:
        self.init()
        count = ctypes.c_int()
        self.call("cuDeviceGetCount", ctypes.byref(count))
        out = []
        for ordinal in range(count.value):
            dev = ctypes.c_int()
            self.call("cuDeviceGet", ctypes.byref(dev), ordinal)
            name = ctypes.create_string_buffer(256)
            self.call("cuDeviceGetName", name, len(name), dev)
            raw = ctypes.create_string_buffer(16)
            self.call("cuDeviceGetUuid_v2" if self.has("cuDeviceGetUuid_v2") else "cuDeviceGetUuid", raw, dev)
            bus = ctypes.create_string_buffer(32)
            self.call("cuDeviceGetPCIBusId", bus, len(bus), dev)
            major, minor = ctypes.c_int(), ctypes.c_int()
            self.call("cuDeviceGetAttribute", ctypes.byref(major), _ATTR_CC_MAJOR, dev)
            self.call("cuDeviceGetAttribute", ctypes.byref(minor), _ATTR_CC_MINOR, dev)
            out.append(
                CudaDevice(
                    ordinal,
                    name.value.decode(errors="replace"),
                    format_uuid(raw.raw),
                    bus.value.decode(),
                    major.value,
                    minor.value,
                )
            )
        return out

    def create_context(self, ordinal: int) -> tuple[int, str]:
        """A new context on the device and the entry point used (cuCtxCreate_v4 on CUDA 13+, else _v2)."""
        dev = ctypes.c_int()
        self.call("cuDeviceGet", ctypes.byref(dev), ordinal)
        ctx = _vp()
        if self.init() >= _CUDA_13 and self.has("cuCtxCreate_v4"):
            params = _CUctxCreateParams()
            try:
                self.call("cuCtxCreate_v4", ctypes.byref(ctx), ctypes.byref(params), 0, dev)
                return int(ctx.value or 0), "cuCtxCreate_v4"
            except CudaCallError:
                if not self.has("cuCtxCreate_v2"):
                    raise
        self.call("cuCtxCreate_v2", ctypes.byref(ctx), 0, dev)
        return int(ctx.value or 0), "cuCtxCreate_v2"

    def load_module(self, module: PtxModule) -> int:
        handle = _vp()
        err_log = ctypes.create_string_buffer(_LOG_BYTES)
        info_log = ctypes.create_string_buffer(_LOG_BYTES)
        options = (ctypes.c_int * 4)(
            _JIT_ERROR_LOG_BUFFER,
            _JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
            _JIT_INFO_LOG_BUFFER,
            _JIT_INFO_LOG_BUFFER_SIZE_BYTES,
        )
        values = (_vp * 4)(
            ctypes.cast(err_log, _vp), _vp(_LOG_BYTES), ctypes.cast(info_log, _vp), _vp(_LOG_BYTES)
        )
        image = module.text.encode() + b"\0"
        self.call("cuModuleLoadDataEx", ctypes.byref(handle), image, 4, options, values, log=err_log)
        return int(handle.value or 0)


def format_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@dataclass(frozen=True, slots=True)
class VectorAddResult:
    device: CudaDevice
    passed: bool
    detail: str
    module: PtxModule | None = None
    context_api: str = ""

    @property
    def line(self) -> str:
        return f"GPU {self.device.ordinal} {self.device.name} ({self.device.uuid}): {self.detail}"


def _inputs(n: int, seed: int) -> tuple[array[float], array[float]]:
    rng = random.Random(seed)
    return array("f", (rng.random() for _ in range(n))), array("f", (rng.random() for _ in range(n)))


def check_sums(a: array[float], b: array[float], c: array[float]) -> tuple[int, str]:
    """Mismatches between ``c`` and the float32 sums ``a + b``, and a description of the first one.

    Summing two float32 values in double and rounding to float32 gives the correctly rounded float32
    sum (double has more than 2*24+2 bits), so the comparison is exact, not a tolerance.
    """
    expected = array("f", (x + y for x, y in zip(a, b, strict=True)))
    bad = [i for i in range(len(expected)) if expected[i] != c[i]]
    if not bad:
        return 0, ""
    i = bad[0]
    return len(bad), f"first at element {i}: {a[i]!r} + {b[i]!r} gave {c[i]!r}, expected {expected[i]!r}"


def run_vector_add(
    driver: CudaDriver, device: CudaDevice, n: int = ELEMENTS, seed: int = 50_000
) -> VectorAddResult:
    """Run vectorAdd on one device; any driver error becomes a failed result naming the call."""
    ctx = 0
    module = 0
    dptrs: list[int] = []
    used: PtxModule | None = None
    api = ""
    try:
        ctx, api = driver.create_context(device.ordinal)
        refused: list[str] = []
        for candidate in candidates(device.cc_major, device.cc_minor):
            try:
                module = driver.load_module(candidate)
            except CudaCallError as exc:
                if exc.code not in _PTX_REFUSED:
                    raise
                refused.append(
                    f"{candidate} refused by the JIT: {exc.error_name}" + (f" ({exc.log})" if exc.log else "")
                )
                continue
            used = candidate
            break
        if used is None:
            return VectorAddResult(device, False, "; ".join(refused), None, api)
        fn = _vp()
        driver.call("cuModuleGetFunction", ctypes.byref(fn), _vp(module), KERNEL_NAME.encode())
        a, b = _inputs(n, seed)
        nbytes = n * ctypes.sizeof(ctypes.c_float)
        for _ in range(3):
            dptr = ctypes.c_uint64()
            driver.call("cuMemAlloc_v2", ctypes.byref(dptr), nbytes)
            dptrs.append(dptr.value)
        d_a, d_b, d_c = dptrs
        a_buf = (ctypes.c_float * n).from_buffer(a)
        b_buf = (ctypes.c_float * n).from_buffer(b)
        driver.call("cuMemcpyHtoD_v2", d_a, ctypes.cast(a_buf, _vp), nbytes)
        driver.call("cuMemcpyHtoD_v2", d_b, ctypes.cast(b_buf, _vp), nbytes)
        blocks = (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
        args = [ctypes.c_uint64(d_a), ctypes.c_uint64(d_b), ctypes.c_uint64(d_c), ctypes.c_int(n)]
        params = (_vp * len(args))(*(ctypes.cast(ctypes.byref(arg), _vp) for arg in args))
        driver.call(
            "cuLaunchKernel", _vp(fn.value), blocks, 1, 1, THREADS_PER_BLOCK, 1, 1, 0, None, params, None
        )
        driver.call("cuCtxSynchronize")
        c = array("f", bytes(nbytes))
        c_buf = (ctypes.c_float * n).from_buffer(c)
        driver.call("cuMemcpyDtoH_v2", ctypes.cast(c_buf, _vp), d_c, nbytes)
        del a_buf, b_buf, c_buf  # release the exports so the arrays could be resized again
        mismatches, first = check_sums(a, b, c)
        what = (
            f"vectorAdd of {n} floats, {blocks} blocks of {THREADS_PER_BLOCK} threads, "
            f"PTX {used} JIT-compiled for sm_{device.cc_major}{device.cc_minor}, {api}"
        )
        if refused:
            what += f" ({'; '.join(refused)})"
        if mismatches:
            return VectorAddResult(
                device, False, f"{what}: {mismatches} of {n} results wrong, {first}: Test FAILED", used, api
            )
        return VectorAddResult(device, True, f"{what}: all {n} results correct: Test PASSED", used, api)
    except CudaCallError as exc:
        return VectorAddResult(device, False, str(exc), used, api)
    finally:
        for ptr in dptrs:
            driver.lib.cuMemFree_v2(ptr)
        if module:
            driver.lib.cuModuleUnload(_vp(module))
        if ctx:
            driver.lib.cuCtxDestroy_v2(_vp(ctx))
