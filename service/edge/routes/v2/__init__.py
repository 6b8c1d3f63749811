"""The Open Inference Protocol (KServe V2) over HTTP: `/v2/...`, for Triton and KServe clients.

`codec` reads and writes the protocol's tensors (JSON and the binary tensor data extension) without any
web framework; `routes` is the HTTP edge, through the same pipeline, limits, API key and metrics as /predict.
"""
