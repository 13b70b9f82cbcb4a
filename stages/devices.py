"""Where extraction runs and what `precision` means there: the Keras backend, its GPUs, the
CPU's bfloat16 instructions.

`precision` picks the arithmetic; this module picks how to get it on this machine:
- `float32`: everywhere.
- `mixed_float16`: GPUs only (Keras' policy; on TensorFlow with XLA on one GPU).
- `mixed_bfloat16` on a GPU, or on JAX or PyTorch: Keras' policy.
- `mixed_bfloat16` on a CPU with TensorFlow: a float32 network and oneDNN's whole-graph
  bfloat16 rewrite (grappler's `auto_mixed_precision_onednn_bfloat16`), not Keras' policy.
  Measured on a 2-core Xeon with AMX (issue 13, 299 px, batch 32, weights none): InceptionV3
  46.0 img/s with the rewrite against 31.4 with Keras' policy and 17.3 at float32; Xception
  20.0 against 16.6 and 11.2. The policy keeps a cast around every layer and runs some ops
  in float32 kernels; the rewrite converts the whole graph once, so oneDNN fuses
  convolution, bias and activation in bfloat16. Features stay within 2.4% of float32 on real
  photos with ImageNet weights, the head's validation loss within noise
  (`benchmarks/bf16_quality.py`); `benchmarks/bench_bf16.py` times the candidates.
- `mixed_bfloat16` on a CPU without bfloat16 instructions (AVX512_BF16 or AMX): oneDNN then
  emulates it, slower than float32 (1.4× to 3.2× measured on this project's AVX-512 development
  machine), so the stage stops and says so, unless `EXTRACT_BF16_EMULATED=1` asks for it
  anyway (a teammate reproducing bf16 features, the tests).
- `mixed_bfloat16` on a CPU with AVX512_BF16 but no AMX (AMD Zen 4, Intel Cooper Lake): slower
  than float32 too, measured on an AMD EPYC (issue 24) and on an AMX Xeon with oneDNN capped at
  AVX512_BF16 (`benchmarks/bench_bf16.py --isa`, docs/benchmarks.md): its bfloat16 matmul peak
  is below its float32 one there. The stage stops likewise, with the same override.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from functools import cache

from stages.cli import ParamsError

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo's names for the instructions
AMX_FLAG = "amx_bf16"  # the ones that make bfloat16 faster than float32 here
EMULATED = "EXTRACT_BF16_EMULATED"


def backend() -> str:
    """Keras' backend: the imported one, else the one Keras will pick (KERAS_BACKEND, then
    keras.json), found without importing Keras, which would import TensorFlow unfiltered."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    name = os.environ.get("KERAS_BACKEND")
    if not name:
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        try:
            with open(os.path.join(home, "keras.json")) as f:
                name = json.load(f).get("backend")
        except (OSError, ValueError, AttributeError):
            name = None
    return name or "tensorflow"


@cache
def gpu_count() -> int:
    """GPUs the Keras backend will use."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        return jax.device_count() if jax.default_backend() == "gpu" else 0
    if name == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's flags; None where /proc/cpuinfo cannot tell (not Linux, not x86)."""
    try:
        with open(cpuinfo) as f:
            lines = [line for line in f if line.startswith("flags")]
    except OSError:
        return None
    return set(lines[0].split(":", 1)[1].split()) if lines else None


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU has bfloat16 instructions (AVX512_BF16 or AMX); None: cannot tell."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else bool(flags & set(BF16_FLAGS))


def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU has AMX's bfloat16 tiles; None: cannot tell."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else AMX_FLAG in flags


def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU has AVX-512 (AVX512F), without which TensorFlow's oneDNN bfloat16 rewrite
    is skipped, not emulated; None: cannot tell."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else "avx512f" in flags


def nvidia_driver() -> bool:
    """An NVIDIA driver is installed, whether or not the backend can use the GPU."""
    import shutil
    from pathlib import Path

    return bool(shutil.which("nvidia-smi")) or Path("/proc/driver/nvidia/version").exists()


def check_precision(precision: str, engine: str = "tensorflow") -> None:
    """Stop before any work where `precision` cannot run as meant on this machine by `engine`."""
    if engine == "openvino":
        _check_openvino_precision(precision)
        return
    if precision == "mixed_float16" and not gpu_count():
        # A GPU machine where the backend finds no GPU: the fix is its CUDA build, not
        # another precision.
        cuda = {"tensorflow": "TensorFlow's CUDA libraries with `pip install -r "
                              "requirements-gpu.txt` (docs/install.md, \"GPU machines\")",
                "jax": "JAX's CUDA build (docs/backends.md)"}.get(
                    backend(), f"a CUDA build of {backend()}")
        fix = (f"this machine has an NVIDIA driver, but Keras' {backend()} backend finds no "
               f"GPU: install {cuda}" if nvidia_driver() else
               "on a CPU use 'float32', or 'mixed_bfloat16' where it has AMX")
        raise ParamsError(f"params.yaml: 'precision' is 'mixed_float16', which needs a GPU; "
                          f"{fix}")
    if precision != "mixed_bfloat16" or gpu_count():
        return
    if backend() == "tensorflow" and cpu_has_avx512() is False:
        # Not even emulated: grappler skips the rewrite on such a CPU, and the features would
        # be float32's, recorded as bfloat16's (seen on an AMD EPYC without AVX-512).
        raise ParamsError(
            "params.yaml: 'precision' is 'mixed_bfloat16', but this CPU has no AVX-512, "
            "without which TensorFlow does not compute in bfloat16 at all (its oneDNN rewrite "
            "is skipped): the features would be float32's. Use 'float32' here (`dvc exp run -S "
            "precision=float32`), or extract on a machine with AMX (docs/backends.md)")
    if os.environ.get(EMULATED) == "1":
        return
    fix = ("Use 'float32' here (`dvc exp run -S precision=float32`), or extract on a machine "
           "with AMX (docs/backends.md)")
    if cpu_has_bf16() is False:
        raise ParamsError(
            "params.yaml: 'precision' is 'mixed_bfloat16', but this CPU has no bfloat16 "
            f"instructions (AVX512_BF16 or AMX): it would be emulated, slower than float32. "
            f"{fix}; {EMULATED}=1 runs it emulated anyway")
    if cpu_has_amx() is False:
        raise ParamsError(
            "params.yaml: 'precision' is 'mixed_bfloat16', but this CPU has AVX512_BF16 and no "
            "AMX: there bfloat16 extraction measured slower than float32 (docs/benchmarks.md). "
            f"{fix}; {EMULATED}=1 runs it anyway")


def _check_openvino_precision(precision: str) -> None:
    """OpenVINO computes in bfloat16 where its CPU plugin lists BF16 (AVX512_BF16 or AMX):
    faster than float32 there, AVX512_BF16 alone included (docs/benchmarks.md). Elsewhere it
    would silently compute in float32, recorded as bfloat16."""
    from stages import openvino_engine

    if precision == "int8" and not openvino_engine.int8_supported():
        raise ParamsError(
            "params.yaml: 'precision' is 'int8', but OpenVINO's CPU plugin lists no int8 "
            "arithmetic on this CPU. Use 'float32' (`dvc exp run -S precision=float32`)")
    if precision != "mixed_bfloat16":
        return  # float32 runs everywhere; mixed_float16 is refused with the params

    if not openvino_engine.bf16_supported():
        raise ParamsError(
            "params.yaml: 'precision' is 'mixed_bfloat16', but OpenVINO finds no bfloat16 "
            "instructions on this CPU (AVX512_BF16 or AMX): it would compute in float32. Use "
            "'float32' here (`dvc exp run -S precision=float32`), or extract on a CPU that has "
            "them (docs/backends.md)")


def cpu_bf16_rewrite(precision: str) -> bool:
    """`mixed_bfloat16` on a CPU with TensorFlow: the graph rewrite instead of Keras' policy."""
    return precision == "mixed_bfloat16" and backend() == "tensorflow" and not gpu_count()


def keras_policy(precision: str) -> str:
    """The dtype policy the network is built under."""
    return "float32" if cpu_bf16_rewrite(precision) else precision


@contextlib.contextmanager
def graph_rewrite(enabled: bool) -> Iterator[None]:
    """TensorFlow functions first run inside get oneDNN's bfloat16 rewrite (grappler optimises
    a function's graph when it is first run); the option is process-wide, so it is put back
    after, for whatever runs next in the same process (the tests)."""
    if not enabled:
        yield
        return
    import tensorflow as tf

    old = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"auto_mixed_precision_onednn_bfloat16":
             old.get("auto_mixed_precision_onednn_bfloat16", False)})
