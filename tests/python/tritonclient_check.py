"""Calls a running airlockd with the real third-party tritonclient (sync and aio HTTP clients,
JSON and binary modes, and the clients' defaults) and checks the answers.

Usage: tritonclient_check.py HOST:PORT MODEL EXPECTED_JSON
EXPECTED_JSON: {"input": [[...4 floats...], ...], "output": [[...3 floats...], ...]}
"""
import asyncio
import json
import sys

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient

url, model, expected = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
x = np.array(expected["input"], dtype=np.float32)
want = np.array(expected["output"], dtype=np.float32)


def check(result, label):
    got = result.as_numpy("y")
    assert got is not None, f"{label}: no output y"
    assert got.shape == want.shape, f"{label}: shape {got.shape} != {want.shape}"
    assert np.allclose(got, want, rtol=1e-5, atol=1e-6), f"{label}: {got} != {want}"
    resp = result.get_response()
    assert resp["model_name"] == model, resp
    assert len(resp["parameters"]["model_digest"]) == 64, resp


def sync_client():
    c = httpclient.InferenceServerClient(url=url)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(model)
    meta = c.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"], meta
    mm = c.get_model_metadata(model)
    assert mm["inputs"][0]["name"] == "x", mm
    cfg = c.get_model_config(model)
    assert cfg["max_batch_size"] >= 1, cfg
    for in_binary in (True, False):
        for out_binary in (True, False):
            inp = httpclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=in_binary)
            out = httpclient.InferRequestedOutput("y", binary_data=out_binary)
            check(c.infer(model, [inp], outputs=[out], request_id="r1"), f"sync in_binary={in_binary} out_binary={out_binary}")
    # The clients' defaults: binary input, no outputs named.
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    check(c.infer(model, [inp]), "sync defaults")
    # Explicit version.
    check(c.infer(model, [inp], model_version=mm["versions"][0]), "sync explicit version")
    # gzip request compression, as the client offers it.
    check(c.infer(model, [inp], request_compression_algorithm="gzip"), "sync gzip")
    stats = c.get_inference_statistics(model)
    assert stats["model_stats"][0]["inference_count"] >= 7, stats
    index = c.get_model_repository_index()
    assert index[0]["name"] == model, index
    # An error surfaces as the client's exception with the server's message.
    bad = httpclient.InferInput("x", [1, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 5), dtype=np.float32))
    try:
        c.infer(model, [bad])
        raise AssertionError("a wrong shape was accepted")
    except httpclient.InferenceServerException as e:
        assert "dimension 1 is 5" in str(e), str(e)
    c.close()


async def aio_client():
    c = aioclient.InferenceServerClient(url=url)
    assert await c.is_server_ready()
    for in_binary in (True, False):
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=in_binary)
        out = httpclient.InferRequestedOutput("y", binary_data=not in_binary)
        check(await c.infer(model, [inp], outputs=[out]), f"aio in_binary={in_binary}")
    # Concurrent requests (the batcher merges them) all get their own rows back.
    rows = [x[i : i + 1] for i in range(x.shape[0])] * 8
    async def one(r):
        inp = httpclient.InferInput("x", list(r.shape), "FP32")
        inp.set_data_from_numpy(r)
        return await c.infer(model, [inp])
    results = await asyncio.gather(*(one(r) for r in rows))
    for i, res in enumerate(results):
        assert np.allclose(res.as_numpy("y"), want[i % x.shape[0]][None, :], rtol=1e-5, atol=1e-6), i
    await c.close()


sync_client()
asyncio.run(aio_client())
print("tritonclient: OK")
