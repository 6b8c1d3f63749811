"""The Open Inference Protocol over gRPC (package `inference`, GRPCInferenceService), beside REST's /v2.

`door.GrpcDoor` serves it with grpc.aio in the app's event loop; `servicer` answers the six calls over the
same Pipeline as /v2, with `tensors` converting messages through the /v2 codec. `grpc_predict_v2.proto` is the
protocol's service; the `*_pb2*` modules are generated from it (`python -m service.edge.grpc.generate`).
"""
