"""The benchmark's peer: KServe's Python model server (kserve 0.21) wrapping an ONNX model with
onnxruntime, speaking the same Open Inference Protocol v2. Configured by environment (KServe
parses sys.argv itself): PEER_MODEL_NAME, PEER_MODEL_PATH, PEER_HTTP_PORT, PEER_GRPC_PORT."""
import os

import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxModel(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload: InferRequest, headers=None, response_headers=None):
        x = payload.inputs[0].as_numpy()
        y = self.session.run(None, {"x": x})[0]
        out = InferOutput(name="y", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "")


if __name__ == "__main__":
    model = OnnxModel(os.environ["PEER_MODEL_NAME"], os.environ["PEER_MODEL_PATH"])
    ModelServer(
        http_port=int(os.environ["PEER_HTTP_PORT"]),
        grpc_port=int(os.environ["PEER_GRPC_PORT"]),
        enable_grpc=False,
        workers=1,
    ).start([model])
