"""Sends inference requests carrying a W3C traceparent to a running airlockd with the real
third-party tritonclient (HTTP and gRPC) and checks that gRPC answers with the same trace id.

Usage:
  trace_check.py HTTP_ADDR GRPC_ADDR TRACE_HTTP TRACE_GRPC TRACE_RAW
Prints "ok" when every check passed; an assertion names the first that did not.
"""
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

IRIS = "demo-iris"
X = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
PARENT = "00f067aa0ba902b7"


def main():
    http_addr, grpc_addr, t_http, t_grpc, t_raw = sys.argv[1:6]

    h = httpclient.InferenceServerClient(http_addr)
    i = httpclient.InferInput("x", list(X.shape), "FP32")
    i.set_data_from_numpy(X)
    r = h.infer(IRIS, [i], headers={"traceparent": f"00-{t_http}-{PARENT}-01"})
    assert r.as_numpy("y").shape == (1, 3), "HTTP answer"

    g = grpcclient.InferenceServerClient(grpc_addr)
    gi = grpcclient.InferInput("x", list(X.shape), "FP32")
    gi.set_data_from_numpy(X)
    r = g.infer(IRIS, [gi], headers={"traceparent": f"00-{t_grpc}-{PARENT}-01"})
    assert r.as_numpy("y").shape == (1, 3), "gRPC answer"

    # The raw stub shows the answer's metadata: the same trace, airlockd's own span.
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_addr))
    req = service_pb2.ModelInferRequest(model_name=IRIS)
    t = req.inputs.add()
    t.name, t.datatype = "x", "FP32"
    t.shape.extend(X.shape)
    req.raw_input_contents.append(X.tobytes())
    _, call = stub.ModelInfer.with_call(
        req, metadata=[("traceparent", f"00-{t_raw}-{PARENT}-01")]
    )
    md = dict(call.initial_metadata())
    tp = md.get("traceparent", "")
    parts = tp.split("-")
    assert len(parts) == 4 and parts[1] == t_raw, f"gRPC traceparent {tp!r}"
    assert parts[2] != PARENT and len(parts[2]) == 16, f"airlockd's own span: {tp!r}"
    assert md.get("x-request-id"), "a request id"
    print("ok")


main()
