"""The op contract (ost_kernels/contract.py) against its mirrors: csrc/op_schema.h's schema
strings and the ops every backend registers, argument by argument."""
import re
from pathlib import Path

import pytest
import torch

from backends_under_test import require
from ost_kernels import contract

SCHEMA_H = Path(__file__).resolve().parents[2] / "csrc" / "op_schema.h"


def _schema_strings() -> dict[str, str]:
    """{"kForwardSchema": "...", "kBackwardSchema": "..."} from op_schema.h (adjacent C string
    literals joined)."""
    text = SCHEMA_H.read_text()
    out = {}
    for name, body in re.findall(r"constexpr const char\* (\w+) =\s*((?:\"[^\"]*\"\s*)+);", text):
        out[name] = "".join(re.findall(r"\"([^\"]*)\"", body))
    return out


def _names(schema: torch._C.FunctionSchema):
    return tuple(a.name for a in schema.arguments), tuple(r.name for r in schema.returns)


@pytest.mark.parametrize("key, args, outputs", [
    ("kForwardSchema", contract.FORWARD_ARGS, contract.FORWARD_OUTPUTS),
    ("kBackwardSchema", contract.BACKWARD_ARGS, contract.BACKWARD_OUTPUTS)])
def test_op_schema_h_mirrors_the_contract(key, args, outputs):
    schema = torch._C.parse_schema("ost_kernels::" + _schema_strings()[key])
    assert _names(schema) == (args, outputs)


def _registered_ops(backend: str):
    if backend == "torch":
        from ost_kernels.backends import pytorch
        return pytorch.od_forward_op._opoverload, pytorch.od_backward_op._opoverload
    if backend == "triton":
        from ost_kernels.triton import ops
        return torch.ops.ost_kernels.od_forward_triton.default, torch.ops.ost_kernels.od_backward_triton.default
    from ost_kernels.backends import _cpp
    assert _cpp.unavailable_reason() is None
    return torch.ops.ost_kernels.od_forward.default, torch.ops.ost_kernels.od_backward.default


@pytest.mark.parametrize("backend", ["torch", "triton", "cpu"])
def test_every_backends_ops_take_the_contracts_arguments(backend):
    require(backend)
    forward, backward = _registered_ops(backend)
    assert _names(forward._schema)[0] == contract.FORWARD_ARGS
    assert _names(backward._schema)[0] == contract.BACKWARD_ARGS
    assert len(forward._schema.returns) == len(contract.FORWARD_OUTPUTS)
    assert len(backward._schema.returns) == len(contract.BACKWARD_OUTPUTS)


def test_cuda_size_limits_mirror_the_kernel():
    """backend "cuda" refuses what csrc/cuda/sinkhorn_groups.cuh's kernels cannot take, with
    the header's own limits."""
    from ost_kernels.backends import cuda

    header = (SCHEMA_H.parent / "cuda" / "sinkhorn_groups.cuh").read_text()
    value = {k: int(v) for k, v in re.findall(r"constexpr int (k\w+) = (\d+);", header)}
    assert cuda.MAX_FRAMES == value["kRowsPerLane"] * value["kMaxGroup"]
    assert cuda.MAX_DESCRIPTORS == value["kMaxDescriptors"]


def test_registration_is_read_when_called():
    """A backend registered after import (the tests' "cuda-emulated") is a valid name for
    od_solve and ost's ODConfig alike; taken names are refused."""
    from ost_kernels import backend_names, register_backend
    from ost_kernels.backends import REGISTRY

    from backends_under_test import EMULATED

    assert EMULATED.name in backend_names()
    for taken in ("auto", "torch", EMULATED.name):
        with pytest.raises(ValueError, match="is taken"):
            register_backend(REGISTRY["torch"].__class__(**{**REGISTRY["torch"].__dict__, "name": taken}))
