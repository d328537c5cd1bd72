"""Calls a running airlockd over gRPC with the real third-party tritonclient (sync, aio and
streaming clients, and the raw generated stubs for what the clients never send) and checks the
answers against the HTTP front end's.

Usage:
  tritonclient_grpc_check.py serve HTTP_ADDR GRPC_ADDR      (--dev: demo-iris and "every")
  tritonclient_grpc_check.py auth GRPC_ADDR TOKEN_ALL TOKEN_OTHER
  tritonclient_grpc_check.py overload HTTP_ADDR GRPC_ADDR   (a 1-slot queue, runs held 1.2 s)
  tritonclient_grpc_check.py tls localhost:PORT CA_PEM
Prints "ok" when every check passed; an assertion names the first that did not.
"""
import asyncio
import queue
import sys
import threading
import time
from functools import partial

import grpc
import ml_dtypes
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

IRIS = "demo-iris"
X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)

# Every datatype the contract allows, with the values at each type's edges.
EVERY = {
    "BOOL": np.array([[True, False], [False, True]], dtype=np.bool_),
    "UINT8": np.array([[0, 255], [1, 2]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535], [1, 2]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1], [1, 2]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1], [1, 2]], dtype=np.uint64),
    "INT8": np.array([[-128, 127], [0, -1]], dtype=np.int8),
    "INT16": np.array([[-32768, 32767], [0, -1]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1], [0, -1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1], [0, -1]], dtype=np.int64),
    "FP16": np.array([[1.5, -2.25], [65504.0, 0.0]], dtype=np.float16),
    "FP32": np.array([[1.5, -2.25], [3.0e38, 1e-38]], dtype=np.float32),
    "FP64": np.array([[1.5, -2.25], [1e300, 5e-324]], dtype=np.float64),
    "BF16": np.array([[1.0, -2.5], [3.0e38, 0.0]], dtype=ml_dtypes.bfloat16),
    "BYTES": np.array([[b"a", b""], ["h\u00e9llo".encode(), b"zz"]], dtype=np.object_),
}


def code_of(e):
    """The status code name a tritonclient exception carries ("StatusCode.NOT_FOUND")."""
    return str(e.status())


def expect_error(f, code, words, label):
    try:
        f()
    except InferenceServerException as e:
        assert code_of(e) == "StatusCode." + code, f"{label}: {code_of(e)} {e.message()}"
        assert words in e.message(), f"{label}: {e.message()!r} lacks {words!r}"
        return e
    raise AssertionError(f"{label}: no error")


def iris_inputs(mod, x=X):
    i = mod.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return [i]


def every_inputs(mod, binary=None):
    out = []
    for dt, v in EVERY.items():
        i = mod.InferInput("x_" + dt.lower(), list(v.shape), dt)
        if binary is None:
            i.set_data_from_numpy(v)
        else:
            i.set_data_from_numpy(v, binary_data=binary)
        out.append(i)
    return out


def same(a, b, label):
    assert a.dtype == b.dtype, f"{label}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{label}: shape {a.shape} != {b.shape}"
    if a.dtype == np.object_:
        assert [bytes(x) for x in a.flat] == [bytes(x) for x in b.flat], f"{label}: {a} != {b}"
    else:
        assert a.tobytes() == b.tobytes(), f"{label}: {a} != {b}"


def serve(http_addr, grpc_addr):
    h = httpclient.InferenceServerClient(url=http_addr)
    c = grpcclient.InferenceServerClient(url=grpc_addr)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(IRIS) and not c.is_model_ready("nope")
    meta = c.get_server_metadata(as_json=True)
    assert meta["name"] == "airlock" and "model_configuration" in meta["extensions"], meta
    mm = c.get_model_metadata(IRIS, as_json=True)
    hm = h.get_model_metadata(IRIS)
    assert (mm["name"], mm["versions"], mm["platform"]) == (hm["name"], hm["versions"], hm["platform"]), (mm, hm)
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in mm["inputs"]] == [
        (t["name"], t["datatype"], t["shape"]) for t in hm["inputs"]], (mm, hm)
    cfg = c.get_model_config(IRIS, as_json=True)["config"]
    hcfg = h.get_model_config(IRIS)
    assert cfg["max_batch_size"] == hcfg["max_batch_size"], (cfg, hcfg)
    assert cfg["input"][0]["data_type"] == hcfg["input"][0]["data_type"], (cfg, hcfg)
    assert cfg["parameters"]["model_digest"]["string_value"] == hcfg["parameters"]["model_digest"]["string_value"]

    # The same answer as over HTTP, with the version and digest.
    want = h.infer(IRIS, iris_inputs(httpclient))
    got = c.infer(IRIS, iris_inputs(grpcclient), request_id="r1")
    same(got.as_numpy("y"), want.as_numpy("y"), "iris")
    r = got.get_response(as_json=True)
    assert r["id"] == "r1" and r["model_version"] == want.get_response()["model_version"], r
    assert r["parameters"]["model_digest"]["string_param"] == want.get_response()["parameters"]["model_digest"], r
    # An explicit version; outputs named.
    got = c.infer(IRIS, iris_inputs(grpcclient), model_version=r["model_version"],
                  outputs=[grpcclient.InferRequestedOutput("y")])
    same(got.as_numpy("y"), want.as_numpy("y"), "iris explicit version")

    # Every datatype, raw both ways, equal to what went in and to the HTTP answer.
    got = c.infer("every", every_inputs(grpcclient))
    over_http = h.infer("every", every_inputs(httpclient, binary=True))
    for dt, v in EVERY.items():
        name = "y_" + dt.lower()
        same(got.as_numpy(name), v, f"gRPC {dt}")
        same(over_http.as_numpy(name), got.as_numpy(name), f"HTTP vs gRPC {dt}")

    # aio client.
    async def aio():
        a = aioclient.InferenceServerClient(url=grpc_addr)
        assert await a.is_server_ready()
        r = await a.infer(IRIS, iris_inputs(aioclient))
        same(r.as_numpy("y"), want.as_numpy("y"), "aio")
        r = await a.infer("every", every_inputs(aioclient))
        for dt, v in EVERY.items():
            same(r.as_numpy("y_" + dt.lower()), v, f"aio {dt}")

        # The aio stream: answers in order, an error answers its own request only.
        async def requests():
            for i in range(6):
                x = X if i != 3 else np.zeros((1, 5), dtype=np.float32)
                yield {"model_name": IRIS, "inputs": iris_inputs(aioclient, x), "request_id": f"a{i}"}

        seen = []
        async for result, error in a.stream_infer(requests()):
            if error is not None:
                assert "input 'x'" in str(error), error
                seen.append("error")
            else:
                seen.append(result.get_response().id)
        assert seen == ["a0", "a1", "a2", "error", "a4", "a5"], seen
        await a.close()

    asyncio.run(aio())

    # The sync stream, pipelined: answers come in order, with their ids.
    answers = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i in range(20):
        x = X if i != 7 else np.zeros((2, 4, 1), dtype=np.float32)
        c.async_stream_infer(IRIS, iris_inputs(grpcclient, x), request_id=f"s{i}")
    seen = []
    for _ in range(20):
        result, error = answers.get(timeout=30)
        if error is not None:
            assert "input 'x'" in error.message(), error.message()
            seen.append("error")
        else:
            same(result.as_numpy("y"), want.as_numpy("y"), "stream")
            seen.append(result.get_response().id)
    assert seen == [f"s{i}" if i != 7 else "error" for i in range(20)], seen
    c.stop_stream()

    st = c.get_inference_statistics(IRIS, as_json=True)["model_stats"][0]
    assert int(st["inference_count"]) >= 27, st
    index = c.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} >= {(IRIS, "READY"), ("every", "READY")}, index

    # Bad input: each with its code and a message naming what is wrong.
    expect_error(lambda: c.infer("nope", iris_inputs(grpcclient)), "NOT_FOUND", "unknown model 'nope'", "unknown model")
    expect_error(lambda: c.infer(IRIS, iris_inputs(grpcclient), model_version="9.9.9"), "NOT_FOUND", "unknown version '9.9.9'", "unknown version")
    expect_error(lambda: c.infer(IRIS, iris_inputs(grpcclient, np.zeros((1, 5), np.float32))), "INVALID_ARGUMENT", "input 'x': dimension 1 is 5", "shape")
    wrong = grpcclient.InferInput("x", [1, 4], "FP64")
    wrong.set_data_from_numpy(np.zeros((1, 4), np.float64))
    expect_error(lambda: c.infer(IRIS, [wrong]), "INVALID_ARGUMENT", "input 'x': datatype FP64, the model expects FP32", "datatype")
    extra = grpcclient.InferInput("z", [1, 4], "FP32")
    extra.set_data_from_numpy(np.zeros((1, 4), np.float32))
    expect_error(lambda: c.infer(IRIS, iris_inputs(grpcclient) + [extra]), "INVALID_ARGUMENT", "the request has 2 inputs; the model has 1", "extra input")
    expect_error(lambda: c.infer(IRIS, [extra]), "INVALID_ARGUMENT", "unexpected input 'z'", "unknown input")
    expect_error(lambda: c.infer(IRIS, iris_inputs(grpcclient), outputs=[grpcclient.InferRequestedOutput("q")]), "INVALID_ARGUMENT", "unknown output 'q'", "unknown output")
    expect_error(lambda: c.infer(IRIS, iris_inputs(grpcclient, np.zeros((0, 4), np.float32))[:0]), "INVALID_ARGUMENT", "input 'x' is missing", "missing input")
    expect_error(lambda: c.get_system_shared_memory_status(), "UNIMPLEMENTED", "shared memory", "shm")
    expect_error(lambda: c.get_cuda_shared_memory_status(), "UNIMPLEMENTED", "shared memory", "cuda shm")
    expect_error(lambda: c.load_model(IRIS), "UNIMPLEMENTED", "signed bundle", "load")
    expect_error(lambda: c.unload_model(IRIS), "UNIMPLEMENTED", "lifecycle", "unload")
    expect_error(lambda: c.get_model_metadata("no\nsuch"), "NOT_FOUND", "not a valid model name", "hostile name")

    # What the clients never send, through the generated stubs: typed contents, and raw
    # contents that do not fit.
    ch = grpc.insecure_channel(grpc_addr)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)

    def typed(**contents):
        req = service_pb2.ModelInferRequest(model_name=IRIS)
        t = req.inputs.add(name="x", datatype="FP32", shape=[2, 4])
        for k, v in contents.items():
            getattr(t.contents, k).extend(v)
        return req

    r = stub.ModelInfer(typed(fp32_contents=X.flatten().tolist()))
    y = np.frombuffer(r.raw_output_contents[0], dtype=np.float32).reshape(2, 3)
    same(y, want.as_numpy("y"), "typed contents")
    assert r.parameters["model_digest"].string_param, r.parameters

    def stub_error(req, code, words, label):
        try:
            stub.ModelInfer(req)
        except grpc.RpcError as e:
            assert e.code() == getattr(grpc.StatusCode, code), f"{label}: {e.code()} {e.details()}"
            assert words in e.details(), f"{label}: {e.details()!r}"
            kinds = [v for k, v in e.trailing_metadata() if k == "airlock-error-kind"]
            assert kinds, f"{label}: no airlock-error-kind"
            return e
        raise AssertionError(f"{label}: no error")

    stub_error(typed(fp32_contents=[1.0] * 7), "INVALID_ARGUMENT", "needs 8 elements, contents.fp32_contents holds 7", "typed count")
    stub_error(typed(int_contents=[1] * 8), "INVALID_ARGUMENT", "FP32 elements go in contents.fp32_contents", "typed field")
    raw = typed()
    raw.raw_input_contents.append(b"\0" * 31)
    stub_error(raw, "INVALID_ARGUMENT", "input 'x': shape [2, 4] of float32 needs 32 bytes, got 31", "raw length")
    raw = typed()
    raw.raw_input_contents.extend([b"\0" * 32, b""])
    stub_error(raw, "INVALID_ARGUMENT", "raw_input_contents holds 2 entries for 1 inputs", "raw count")
    e = stub_error(service_pb2.ModelInferRequest(model_name="nope"), "NOT_FOUND", "unknown model", "kind")
    assert ("airlock-error-kind", "not_found") in e.trailing_metadata(), e.trailing_metadata()
    # Larger than [grpc] max_message_size: refused before it is buffered.
    big = typed()
    big.raw_input_contents.append(b"\0" * (2 << 20))
    try:
        stub.ModelInfer(big)
        raise AssertionError("a message over the limit was taken")
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED), e
        assert "too large" in e.details(), e.details()
    # The server is still serving.
    assert c.infer(IRIS, iris_inputs(grpcclient)).as_numpy("y") is not None


def auth(grpc_addr, token_all, token_other):
    def client():
        return grpcclient.InferenceServerClient(url=grpc_addr)

    bearer = lambda t: {"authorization": "Bearer " + t}
    c = client()
    # Probes stay open, as the HTTP health routes do.
    assert c.is_server_live() and c.is_server_ready()
    for label, headers in [("none", None), ("bad", bearer("tok_nope.secret")), ("malformed", {"authorization": "Basic x"})]:
        expect_error(lambda: c.infer(IRIS, iris_inputs(grpcclient), headers=headers), "UNAUTHENTICATED", "a valid bearer token is required", f"infer {label}")
        expect_error(lambda: c.get_model_metadata(IRIS, headers=headers), "UNAUTHENTICATED", "bearer token", f"metadata {label}")
    # A token for another model: forbidden for this one, and this one is not listed.
    expect_error(lambda: c.infer(IRIS, iris_inputs(grpcclient), headers=bearer(token_other)), "PERMISSION_DENIED", "does not grant access", "other model infer")
    expect_error(lambda: c.get_model_config(IRIS, headers=bearer(token_other)), "PERMISSION_DENIED", "does not grant access", "other model config")
    index = c.get_model_repository_index(headers=bearer(token_other), as_json=True).get("models", [])
    assert all(m["name"] != IRIS for m in index), index
    stats = c.get_inference_statistics(headers=bearer(token_other), as_json=True).get("model_stats", [])
    assert all(m["name"] != IRIS for m in stats), stats
    # The stream refuses per request.
    answers = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)), headers=bearer(token_other))
    c.async_stream_infer(IRIS, iris_inputs(grpcclient), request_id="o1")
    result, error = answers.get(timeout=30)
    assert error is not None and "does not grant access" in error.message(), (result, error)
    c.stop_stream()
    # The right token works, over every client.
    r = c.infer(IRIS, iris_inputs(grpcclient), headers=bearer(token_all))
    assert r.as_numpy("y").shape == (2, 3)
    assert c.is_model_ready(IRIS, headers=bearer(token_all))

    async def aio():
        a = aioclient.InferenceServerClient(url=grpc_addr)
        try:
            await a.infer(IRIS, iris_inputs(aioclient))
            raise AssertionError("aio without a token")
        except InferenceServerException as e:
            assert code_of(e) == "StatusCode.UNAUTHENTICATED", e
        r = await a.infer(IRIS, iris_inputs(aioclient), headers=bearer(token_all))
        assert r.as_numpy("y").shape == (2, 3)
        await a.close()

    asyncio.run(aio())


def overload(http_addr, grpc_addr):
    c = grpcclient.InferenceServerClient(url=grpc_addr)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_addr))
    results = {}

    def run(key, **kw):
        try:
            results[key] = c.infer(IRIS, iris_inputs(grpcclient, X[:1]), **kw)
        except InferenceServerException as e:
            results[key] = e

    running = threading.Thread(target=run, args=("running",))
    running.start()
    time.sleep(0.3)
    # A deadline of 300 ms (grpc-timeout): it waits behind the running request and is not run.
    late = threading.Thread(target=run, args=("late",), kwargs={"client_timeout": 0.3})
    late.start()
    time.sleep(0.1)
    # The queue (capacity 1) is now full: refused at once, with the hint.
    req = service_pb2.ModelInferRequest(model_name=IRIS)
    t = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    t.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    try:
        stub.ModelInfer(req)
        raise AssertionError("a full queue took a request")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (e.code(), e.details())
        assert "queue of model demo-iris is full" in e.details(), e.details()
        md = dict(e.trailing_metadata())
        assert int(md["grpc-retry-pushback-ms"]) >= 1000, md
        assert md["airlock-error-kind"] == "queue_full", md
    running.join()
    late.join()
    assert not isinstance(results["running"], Exception), results["running"]
    assert isinstance(results["late"], InferenceServerException), results["late"]
    assert code_of(results["late"]) == "StatusCode.DEADLINE_EXCEEDED", results["late"]
    # Give the late request's deadline time to pass on the server too, then: it never ran.
    time.sleep(1.5)
    st = httpclient.InferenceServerClient(url=http_addr).get_inference_statistics(IRIS)["model_stats"][0]
    assert st["inference_count"] == 1, st
    assert st["rejected_count"] == 1, st
    # A cancelled stream (RST_STREAM from the generated stub): its queued work is skipped too.
    def two():
        for i in ("c1", "c2"):
            r = service_pb2.ModelInferRequest(model_name=IRIS, id=i)
            t = r.inputs.add(name="x", datatype="FP32", shape=[1, 4])
            t.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
            yield r
        time.sleep(10)

    answers = stub.ModelStreamInfer(two())
    time.sleep(0.3)
    answers.cancel()
    time.sleep(2.5)
    st = httpclient.InferenceServerClient(url=http_addr).get_inference_statistics(IRIS)["model_stats"][0]
    # c1 was running when the call was cancelled (it finishes); c2 never runs.
    assert st["inference_count"] <= 2, st

mode = sys.argv[1]
if mode == "serve":
    serve(sys.argv[2], sys.argv[3])
elif mode == "auth":
    auth(sys.argv[2], sys.argv[3], sys.argv[4])
elif mode == "tls":
    # TLS with the daemon's certificate (ALPN h2), the name checked: localhost:PORT.
    c = grpcclient.InferenceServerClient(url=sys.argv[2], ssl=True, root_certificates=sys.argv[3])
    assert c.is_server_live() and c.is_server_ready()
elif mode == "overload":
    overload(sys.argv[2], sys.argv[3])
else:
    raise SystemExit(f"unknown mode {mode}")
print("ok")
