"""pvae.inference: generated stubs of the Open Inference Protocol (KServe v2) with Triton's extensions.

``grpc_service.proto`` and ``model_config.proto`` are vendored unchanged from
triton-inference-server/common (BSD-3-Clause; see LICENSE and README.md in this folder). The server
side lives in ``pvae.serving.oip``.
"""
