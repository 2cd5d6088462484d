"""The op contract (ost_kernels/contract.py) against its mirrors: csrc/op_schema.h's schema
strings and the ops every backend registers, argument by argument."""
import re
from pathlib import Path

import pytest
import torch

from tests.helpers.backends_under_test import BACKENDS, require
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


@pytest.mark.parametrize("key, schema", [("kForwardSchema", contract.FORWARD_SCHEMA),
                                         ("kBackwardSchema", contract.BACKWARD_SCHEMA)])
def test_op_schema_h_mirrors_the_contract(key, schema):
    """The C++ schema strings are the contract's, argument for argument, types and defaults
    included."""
    mirrored = torch._C.parse_schema("ost_kernels::" + _schema_strings()[key])
    written = torch._C.parse_schema("ost_kernels::" + key + schema)
    assert str(mirrored).split("(", 1)[1] == str(written).split("(", 1)[1]
    assert _names(mirrored)[0][:len(contract.FORWARD_TENSORS)] == (
        contract.FORWARD_TENSORS if key == "kForwardSchema" else contract.BACKWARD_ARGS[:6])


def test_solver_scalars_are_listed_in_cpp_once_more_in_the_same_order():
    """op_schema.h's SolverScalars and forward_entry list the contract's scalars in its order."""
    text = SCHEMA_H.read_text()
    struct = re.search(r"struct SolverScalars \{(.*?)\};", text, re.S).group(1)
    fields = tuple(re.findall(r"^\s*\w+ (\w+)(?:, (\w+))?;", struct, re.M))
    assert tuple(n for pair in fields for n in pair if n) == contract.SCALAR_NAMES
    entry = re.search(r"SolverScalars\{([^}]*)\}", text).group(1)
    assert tuple(x.strip() for x in entry.split(",")) == contract.SCALAR_NAMES


def test_solver_options_give_the_scalars_in_op_order():
    from ost_kernels import SolverOptions

    options = SolverOptions(eps=0.2, max_iter=7, tol=0.01, normalize=False, reg_m=(0.5, float("inf")), chunk_mb=3)
    assert options.op_args() == (0.2, 7, 0.01, 0.5, float("inf"), False, 3.0)
    assert contract.OpScalars(*options.op_args()) == (*options.op_args(), False, True)
    # chunk_mb left unset: the default, resolved once for every backend.
    assert SolverOptions().op_args()[-1] == 24.0


def _registered_ops(backend: str):
    from ost_kernels.backends import REGISTRY
    from ost_kernels.backends.base import op

    require(backend)  # loads its ops
    return tuple(op(name).default for name in REGISTRY[backend].ops)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backends_ops_take_the_contracts_arguments(backend):
    forward, backward = _registered_ops(backend)
    assert _names(forward._schema) == (contract.FORWARD_ARGS, contract.FORWARD_OUTPUTS)
    assert _names(backward._schema) == (contract.BACKWARD_ARGS, contract.BACKWARD_OUTPUTS)


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

    from tests.helpers.backends_under_test import EMULATED

    assert EMULATED.name in backend_names()
    for taken in ("auto", "torch", EMULATED.name):
        with pytest.raises(ValueError, match="is taken"):
            register_backend(REGISTRY["torch"].__class__(**{**REGISTRY["torch"].__dict__, "name": taken}))
