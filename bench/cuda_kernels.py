"""Which (op, type) pairs ONNX Runtime's CUDA execution provider has kernels for: data, no logic.

Facts from ONNX Runtime's generated kernel table (``docs/OperatorKernels.md`` of microsoft/onnxruntime,
section "Operators implemented by CUDAExecutionProvider", domain ai.onnx, commit
001d12d2623fd411ce0f83d05abb5e82304a3389; ONNX Runtime is MIT-licensed), transcribed for the ops the
bundle's graphs use and a few near them. :func:`pvae.bench.gpu_check.cuda_kernel_gaps` reads it to list,
without a GPU, the nodes of a graph that the CUDA EP could not take and would leave on the CPU.

``CUDA_KERNELS[op]``: the CUDA rows, newest first, as (since_version, until_version or None for "N+",
{type constraint: element types}); element types are ``onnx.TensorProto`` names ("FLOAT", "UINT64").
Where the table lists no types for a constraint, its key is absent.

``CUDA_INPUT_CONSTRAINTS[op]``: the type constraint of each input, in order, at opsets 18 to 21; an
input of a fixed type is written as the table prints it ("tensor(int64)"); a variadic input once.

``CUDA_ABSENT``: ops checked to have no CUDA row in that table (so a graph that uses them leaves those
nodes on the CPU).

To extend it, copy the op's CUDA rows from the same table of the ONNX Runtime release in use.
"""

from __future__ import annotations


def _types(names: str) -> frozenset[str]:
    return frozenset(names.split())


#: Ops with no CUDA row in the table (checked): the integer bit ops, and CastLike (an ONNX function that
#: ONNX Runtime inlines as a Cast).
CUDA_ABSENT = frozenset({"BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "CastLike"})

#: op -> CUDA rows (since, until or None, {constraint: element types}), newest first.
CUDA_KERNELS: dict[str, list[tuple[int, int | None, dict[str, frozenset[str]]]]] = {
    "Abs": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (6, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "Add": [
        (14, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (13, 13, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (7, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
    ],
    "And": [
        (7, None, {
            "T": _types("BOOL"),
            "T1": _types("BOOL"),
        }),
    ],
    "Cast": [
        (23, None, {
            "T1": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT4E2M1 FLOAT8E4M3FN FLOAT8E5M2 INT16 INT32 INT64 "
                         "INT8 UINT16 UINT32 UINT64 UINT8"),
            "T2": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT4E2M1 FLOAT8E4M3FN FLOAT8E5M2 INT16 INT32 INT64 "
                         "INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (21, 22, {
            "T1": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E5M2 INT16 INT32 INT64 INT8 UINT16 "
                         "UINT32 UINT64 UINT8"),
            "T2": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT4E2M1 FLOAT8E4M3FN FLOAT8E5M2 INT16 INT32 INT64 "
                         "INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (19, 20, {
            "T1": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E5M2 INT16 INT32 INT64 INT8 UINT16 "
                         "UINT32 UINT64 UINT8"),
            "T2": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT4E2M1 FLOAT8E4M3FN FLOAT8E5M2 INT16 INT32 INT64 "
                         "INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (13, 18, {
            "T1": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T2": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT4E2M1 FLOAT8E4M3FN FLOAT8E5M2 INT16 INT32 INT64 "
                         "INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (9, 12, {
            "T1": _types("BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T2": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT4E2M1 FLOAT8E4M3FN FLOAT8E5M2 INT16 INT32 INT64 "
                         "INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (6, 8, {
            "T1": _types("BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T2": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT4E2M1 FLOAT8E4M3FN FLOAT8E5M2 INT16 INT32 INT64 "
                         "INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "Clip": [
        (13, None, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT64 INT8 UINT64 UINT8"),
        }),
        (12, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT64 INT8 UINT64 UINT8"),
        }),
        (11, 11, {
            "T": _types("FLOAT"),
        }),
        (6, 10, {
            "T": _types("FLOAT"),
        }),
    ],
    "Compress": [
        (11, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("BOOL"),
        }),
        (9, 10, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("BOOL"),
        }),
    ],
    "Concat": [
        (13, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (11, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (4, 10, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "ConstantOfShape": [
        (9, None, {
            "T1": _types("INT64"),
            "T2": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "Conv": [
        (22, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16"),
        }),
        (11, 21, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (1, 10, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "DepthToSpace": [
        (13, None, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (11, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (1, 10, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Div": [
        (14, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (13, 13, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (7, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
    ],
    "Equal": [
        (13, None, {
            "T": _types("BOOL DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
            "T1": _types("BOOL"),
        }),
        (11, 12, {
            "T": _types("BOOL DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (7, 10, {
            "T": _types("BOOL INT32 INT64"),
        }),
    ],
    "Exp": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16"),
        }),
        (6, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Floor": [
        (13, None, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (6, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Gather": [
        (13, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
        (11, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
        (1, 10, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
    ],
    "GatherElements": [
        (13, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
        (11, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
    ],
    "Gemm": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16"),
        }),
        (11, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (9, 10, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (7, 8, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Greater": [
        (13, None, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
            "T1": _types("BOOL"),
        }),
        (9, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (7, 8, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "GreaterOrEqual": [
        (16, None, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
            "T1": _types("BOOL"),
        }),
        (12, 15, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
            "T1": _types("BOOL"),
        }),
    ],
    "Identity": [
        (19, None, {
            "V": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ "
                        "INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8 seq(BFLOAT16) seq(BOOL) seq(DOUBLE) "
                        "seq(FLOAT) seq(FLOAT16) seq(FLOAT8E4M3FN) seq(FLOAT8E4M3FNUZ) seq(FLOAT8E5M2) "
                        "seq(FLOAT8E5M2FNUZ) seq(INT16) seq(INT32) seq(INT64) seq(INT8) seq(UINT16) seq(UINT32) "
                        "seq(UINT64) seq(UINT8)"),
        }),
        (14, 18, {
            "V": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8 "
                        "seq(BFLOAT16) seq(BOOL) seq(DOUBLE) seq(FLOAT) seq(FLOAT16) seq(INT16) seq(INT32) seq(INT64) "
                        "seq(INT8) seq(UINT16) seq(UINT32) seq(UINT64) seq(UINT8)"),
        }),
        (13, 13, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (1, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "Less": [
        (13, None, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
            "T1": _types("BOOL"),
        }),
        (9, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (7, 8, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "LessOrEqual": [
        (16, None, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
            "T1": _types("BOOL"),
        }),
        (12, 15, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
            "T1": _types("BOOL"),
        }),
    ],
    "Log": [
        (13, None, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (6, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Loop": [
        (19, None, {
            "B": _types("BOOL"),
            "I": _types("INT64"),
            "V": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ "
                        "INT16 INT32 INT64 INT8 STRING UINT16 UINT32 UINT64 UINT8 seq(BFLOAT16) seq(BOOL) seq(DOUBLE) "
                        "seq(FLOAT) seq(FLOAT16) seq(FLOAT8E4M3FN) seq(FLOAT8E4M3FNUZ) seq(FLOAT8E5M2) "
                        "seq(FLOAT8E5M2FNUZ) seq(INT16) seq(INT32) seq(INT64) seq(INT8) seq(STRING) seq(UINT16) "
                        "seq(UINT32) seq(UINT64) seq(UINT8)"),
        }),
        (13, 18, {
            "B": _types("BOOL"),
            "I": _types("INT64"),
            "V": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 STRING UINT16 UINT32 UINT64 UINT8 "
                        "seq(BFLOAT16) seq(BOOL) seq(DOUBLE) seq(FLOAT) seq(FLOAT16) seq(INT16) seq(INT32) seq(INT64) "
                        "seq(INT8) seq(STRING) seq(UINT16) seq(UINT32) seq(UINT64) seq(UINT8)"),
        }),
        (11, 12, {
            "B": _types("BOOL"),
            "I": _types("INT64"),
            "V": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (1, 10, {
            "B": _types("BOOL"),
            "I": _types("INT64"),
            "V": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "MatMul": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16"),
        }),
        (9, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (1, 8, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Max": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (12, 12, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (6, 11, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Min": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (12, 12, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (6, 11, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Mod": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (10, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
    ],
    "Mul": [
        (14, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (13, 13, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (7, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
    ],
    "Neg": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8"),
        }),
        (6, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8"),
        }),
    ],
    "Not": [
        (1, None, {
            "T": _types("BOOL"),
        }),
    ],
    "Or": [
        (7, None, {
            "T": _types("BOOL"),
            "T1": _types("BOOL"),
        }),
    ],
    "Pad": [
        (18, None, {
            "T": _types("BOOL DOUBLE FLOAT FLOAT16"),
        }),
        (13, 17, {
            "T": _types("BOOL DOUBLE FLOAT FLOAT16"),
        }),
        (11, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (2, 10, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "QuantizeLinear": [
        (21, None, {
            "T1": _types("FLOAT FLOAT16"),
            "T2": _types("FLOAT8E4M3FN FLOAT8E5M2 INT4 INT8 UINT4 UINT8"),
        }),
        (19, 20, {
            "T1": _types("FLOAT FLOAT16"),
            "T2": _types("FLOAT8E4M3FN FLOAT8E5M2 INT8 UINT8"),
        }),
        (13, 18, {
            "T1": _types("FLOAT"),
            "T2": _types("INT8 UINT8"),
        }),
        (10, 12, {
            "T1": _types("FLOAT"),
            "T2": _types("INT8 UINT8"),
        }),
    ],
    "Range": [
        (11, None, {
            "T": _types("DOUBLE FLOAT INT16 INT32 INT64"),
        }),
    ],
    "ReduceMean": [
        (18, None, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32"),
        }),
        (1, 17, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32"),
        }),
    ],
    "ReduceSum": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64"),
        }),
        (1, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64"),
        }),
    ],
    "Reshape": [
        (23, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ "
                        "INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "shape": _types("INT64"),
        }),
        (21, 22, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ "
                        "INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "shape": _types("INT64"),
        }),
        (19, 20, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ "
                        "INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "shape": _types("INT64"),
        }),
        (14, 18, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "shape": _types("INT64"),
        }),
        (13, 13, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "shape": _types("INT64"),
        }),
        (5, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "shape": _types("INT64"),
        }),
        (1, 4, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "ScatterElements": [
        (18, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
        (16, 17, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
        (13, 15, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
        (11, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
    ],
    "Shape": [
        (23, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ "
                        "INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("INT64"),
        }),
        (21, 22, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ "
                        "INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("INT64"),
        }),
        (19, 20, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ "
                        "INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("INT64"),
        }),
        (15, 18, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("INT64"),
        }),
        (13, 14, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("INT64"),
        }),
        (1, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("INT64"),
        }),
    ],
    "Sigmoid": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16"),
        }),
        (6, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Size": [
        (13, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 STRING UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("INT64"),
        }),
        (1, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 STRING UINT16 UINT32 UINT64 UINT8"),
            "T1": _types("INT64"),
        }),
    ],
    "Slice": [
        (13, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
        (11, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
        (10, 10, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
            "Tind": _types("INT32 INT64"),
        }),
        (1, 9, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "Softplus": [
        (1, None, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "SpaceToDepth": [
        (13, None, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
        (1, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Split": [
        (18, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (13, 17, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (11, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (2, 10, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "Sqrt": [
        (13, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16"),
        }),
        (6, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16"),
        }),
    ],
    "Squeeze": [
        (23, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (21, 22, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (13, 20, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (11, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (1, 10, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "Sub": [
        (14, None, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (13, 13, {
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
        (7, 12, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT32 UINT64"),
        }),
    ],
    "TopK": [
        (11, None, {
            "I": _types("INT64"),
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64"),
        }),
        (10, 10, {
            "I": _types("INT64"),
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64"),
        }),
        (1, 9, {
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64"),
        }),
    ],
    "Transpose": [
        (23, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (21, 22, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (13, 20, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (1, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "Unsqueeze": [
        (23, None, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (21, 22, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (13, 20, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (11, 12, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
        (1, 10, {
            "T": _types("BFLOAT16 BOOL DOUBLE FLOAT FLOAT16 INT16 INT32 INT64 INT8 UINT16 UINT32 UINT64 UINT8"),
        }),
    ],
    "Where": [
        (16, None, {
            "B": _types("BOOL"),
            "T": _types("BFLOAT16 DOUBLE FLOAT FLOAT16 INT32 INT64 UINT8"),
        }),
        (9, 15, {
            "B": _types("BOOL"),
            "T": _types("DOUBLE FLOAT FLOAT16 INT32 INT64 UINT8"),
        }),
    ],
}

#: op -> the type constraint of each of its inputs (opsets 18 to 21).
CUDA_INPUT_CONSTRAINTS: dict[str, list[str]] = {
    "Abs": ["T"],
    "Add": ["T", "T"],
    "And": ["T", "T"],
    "Cast": ["T1"],
    "Clip": ["T", "T", "T"],
    "Compress": ["T", "T1"],
    "Concat": ["T"],
    "ConstantOfShape": ["T1"],
    "Conv": ["T", "T", "T"],
    "DepthToSpace": ["T"],
    "Div": ["T", "T"],
    "Equal": ["T", "T"],
    "Exp": ["T"],
    "Floor": ["T"],
    "Gather": ["T", "Tind"],
    "GatherElements": ["T", "Tind"],
    "Gemm": ["T", "T", "T"],
    "Greater": ["T", "T"],
    "GreaterOrEqual": ["T", "T"],
    "Identity": ["V"],
    "Less": ["T", "T"],
    "LessOrEqual": ["T", "T"],
    "Log": ["T"],
    "Loop": ["I", "B", "V"],
    "MatMul": ["T", "T"],
    "Max": ["T"],
    "Min": ["T"],
    "Mod": ["T", "T"],
    "Mul": ["T", "T"],
    "Neg": ["T"],
    "Not": ["T"],
    "Or": ["T", "T"],
    "Pad": ["T", "tensor(int64)", "T", "Tind"],
    "QuantizeLinear": ["T1", "T1", "T2"],
    "Range": ["T", "T", "T"],
    "ReduceMean": ["T", "tensor(int64)"],
    "ReduceSum": ["T", "tensor(int64)"],
    "Reshape": ["T", "tensor(int64)"],
    "ScatterElements": ["T", "Tind", "T"],
    "Shape": ["T"],
    "Sigmoid": ["T"],
    "Size": ["T"],
    "Slice": ["T", "Tind", "Tind", "Tind", "Tind"],
    "Softplus": ["T"],
    "SpaceToDepth": ["T"],
    "Split": ["T", "tensor(int64)"],
    "Sqrt": ["T"],
    "Squeeze": ["T", "tensor(int64)"],
    "Sub": ["T", "T"],
    "TopK": ["T", "tensor(int64)"],
    "Transpose": ["T"],
    "Unsqueeze": ["T", "tensor(int64)"],
    "Where": ["B", "T", "T"],
}
