"""pvae.bench: benchmarks, the load generator and the reliability harness.

They use the product (training, export, serving, clients); the product never imports them
(tests/test_dependencies.py holds that). Every figure they print is a ratio against a baseline
measured in the same run.

Modules::

    config       BenchConfig: what a streaming benchmark runs (pvae-bench and pvae-bench-serve)
    loadgen      the one streaming load generator: AsyncClient streams fed from shared tickets, tallied
    train        pvae-bench-train: training throughput, the sampler against Algorithm 1 as written
    export       pvae-bench-export: ONNX Runtime rate path vs torch eager, and the sampler's cost
    serve        pvae-bench-serve: loopback streaming vs the in-process engine, on VGA frames
    load         pvae-bench: a perf_analyzer-style load generator for pvae-serve (levels, pacing, CSV, plots)
    oip          pvae-bench-oip: Triton's perf_analyzer against the Open Inference Protocol endpoint
    oip_floor    the transport-floor OIP server that pvae-bench-oip measures (no compute)
    reliability  pvae-reliability: load, faults, hostile input, port conflicts and log flood, as one table
"""
