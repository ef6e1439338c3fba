"""The Open Inference Protocol (KServe V2; also what Triton and MLServer speak), beside /predict.

GET  /v2                                 server metadata
GET  /v2/health/live, /v2/health/ready   200 when live / ready (503 while the model loads)
GET  /v2/models/{name}                   the model's inputs and outputs
GET  /v2/models/{name}/ready
POST /v2/models/{name}/infer             one input tensor [rows, features] (FP32, FP64, INT64 or INT32; row-major
                                         `data`, flat or nested, or the binary data extension); outputs
                                         `predictions` [rows] (the class values) and `probabilities` [rows, classes]
Errors are {"error": "..."} with 400 (bad request), 404 (unknown model) or 503 (not ready), as the protocol says.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ... import __version__, runtime
from ...artifacts import LoadedModel
from ..batching import BatcherClosed
from ..state import ServingState, State

DATATYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
OUTPUTS = ("predictions", "probabilities")
BINARY_HEADER = "inference-header-content-length"  # the binary data extension (tritonclient's default)
# The request's JSON form, for the OpenAPI description (the route reads the raw body: binary data may follow it)
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": {"enum": ["BYTES"] if runtime.INPUT == "text" else list(DATATYPES)},
                "shape": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer", "minimum": 0}},
                "data": {"type": "array", "description": "row-major numbers, flat or nested"},
                "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}},
            },
        }},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"enum": list(OUTPUTS)}}}},
    },
}


class ProtocolError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _input_rows(body: dict[str, Any], binary: bytes, n_features: int, max_rows: int) -> np.ndarray:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError("expected exactly one input tensor in 'inputs'")
    tensor = inputs[0]
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype not in DATATYPES:
        raise ProtocolError(f"input datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape) and 1 <= len(shape) <= 2):
        raise ProtocolError(f"input shape {shape!r} must be [rows, {n_features}] or [{n_features}]")
    size = math.prod(shape)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("input 'parameters' must be an object")
    binary_size = parameters.get("binary_data_size")
    try:
        if binary_size is not None:
            if len(binary) != binary_size:
                raise ProtocolError(f"binary input holds {len(binary)} bytes, binary_data_size says {binary_size}")
            array = np.frombuffer(binary, dtype=np.dtype(DATATYPES[datatype]).newbyteorder("<"))
        else:
            array = np.asarray(tensor.get("data"), dtype=DATATYPES[datatype])
    except (TypeError, ValueError) as problem:
        raise ProtocolError(f"input data does not hold {datatype} numbers: {problem}") from None
    if array.size != size:
        raise ProtocolError(f"input data holds {array.size} numbers, shape {shape} needs {size}")
    rows = array.reshape(shape if len(shape) == 2 else [1, shape[0]]).astype(np.float64)
    if rows.shape[1] != n_features:
        raise ProtocolError(f"expected {n_features} features per row, got shape {shape}")
    if not 1 <= rows.shape[0] <= max_rows:
        raise ProtocolError(f"batch of {rows.shape[0]} rows: must be 1 to MAX_BATCH_SIZE={max_rows}")
    if not np.isfinite(rows).all():
        raise ProtocolError("input data holds NaN or infinity")
    return rows


def _input_texts(body: dict[str, Any], binary: bytes, max_rows: int, max_chars: int) -> np.ndarray:
    """Text models: one BYTES tensor of shape [n] or [n, 1], UTF-8 texts as JSON strings or, with the binary data
    extension, each a 4-byte little-endian length and its bytes."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError("expected exactly one input tensor in 'inputs'")
    tensor = inputs[0]
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype != "BYTES":
        raise ProtocolError(f"input datatype {datatype!r} is not supported; this text model takes BYTES (UTF-8 texts)")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape) and len(shape) in (1, 2)
            and (len(shape) == 1 or shape[1] == 1)):
        raise ProtocolError(f"input shape {shape!r} must be [texts] or [texts, 1]")
    size = shape[0]
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("input 'parameters' must be an object")
    if not 1 <= size <= max_rows:
        raise ProtocolError(f"batch of {size} texts: must be 1 to MAX_BATCH_SIZE={max_rows}")
    if parameters.get("binary_data_size") is not None:
        if len(binary) != parameters["binary_data_size"]:
            raise ProtocolError(f"binary input holds {len(binary)} bytes, binary_data_size says "
                                f"{parameters['binary_data_size']}")
        items: list[Any] = []
        at = 0
        while at < len(binary):
            length = int.from_bytes(binary[at:at + 4], "little")
            if at + 4 + length > len(binary):
                raise ProtocolError("binary input is cut short: an element's length runs past its end")
            items.append(binary[at + 4:at + 4 + length])
            at += 4 + length
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise ProtocolError("input 'data' must be a list of strings")
        items = [item for row in data for item in (row if isinstance(row, list) else [row])]
    if len(items) != size:
        raise ProtocolError(f"input data holds {len(items)} texts, shape {shape} needs {size}")
    texts: list[str] = []
    for index, item in enumerate(items):
        try:
            text = item.decode("utf-8") if isinstance(item, bytes) else item
        except UnicodeDecodeError:
            raise ProtocolError(f"text {index} is not UTF-8") from None
        if not isinstance(text, str):
            raise ProtocolError(f"text {index} is not a string: BYTES data holds texts")
        if not text.strip():
            raise ProtocolError(f"text {index} is empty")
        if len(text) > max_chars:
            raise ProtocolError(f"text {index} has {len(text)} characters, over MAX_TEXT_CHARS={max_chars}")
        texts.append(text)
    return np.asarray(texts, dtype=object)


router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (V2)"])


def model_or_error(state: ServingState, model_name: str) -> LoadedModel:
    name = state.settings.model_name
    if model_name != name:
        raise ProtocolError(f"unknown model {model_name!r}; this server serves {name!r}", 404)
    model = state.serving()
    if model is None:
        raise ProtocolError(f"model {name!r} is not ready", 503)
    return model


@router.get("")
async def server_metadata(state: State) -> dict[str, Any]:
    return {"name": state.settings.model_name, "version": __version__, "extensions": ["binary_data"]}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def ready(state: State) -> JSONResponse:
    is_ready = state.serving() is not None
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{model_name}")
async def model_metadata(model_name: str, state: State) -> JSONResponse:
    try:
        model = model_or_error(state, model_name)
    except ProtocolError as problem:
        return error(str(problem), problem.status)
    meta = model.metadata
    classes = meta["classes"]
    return JSONResponse({
        "name": state.settings.model_name,
        "versions": [meta["sha256"][:12]],
        "platform": f"{meta.get('serve_runtime', 'native')}-{meta['framework']}",
        "inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [-1]} if runtime.INPUT == "text"
                   else {"name": "input-0", "datatype": "FP64", "shape": [-1, model.n_features]}],
        "outputs": [
            {"name": "predictions", "datatype": _class_datatype(classes), "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes)]},
        ],
    })


@router.get("/models/{model_name}/ready")
async def model_ready(model_name: str, state: State) -> JSONResponse:
    try:
        model_or_error(state, model_name)
    except ProtocolError as problem:
        return error(str(problem), problem.status)
    return JSONResponse({"name": state.settings.model_name, "ready": True})


@router.post("/models/{model_name}/infer", openapi_extra={
    "requestBody": {"required": True, "content": {"application/json": {"schema": INFER_REQUEST}}}})
async def model_infer(model_name: str, request: Request, state: State) -> JSONResponse:
    try:
        model = model_or_error(state, model_name)
        raw = await request.body()
        header = request.headers.get(BINARY_HEADER)
        cut = int(header) if header and header.isdigit() else len(raw)
        try:
            body = json.loads(raw[:cut])
        except ValueError as problem:
            raise ProtocolError(f"the request is not JSON: {problem}") from None
        if not isinstance(body, dict):
            raise ProtocolError("the request must be a JSON object with 'inputs'")
        try:
            settings = state.settings
            if runtime.INPUT == "text":
                rows = _input_texts(body, raw[cut:], settings.max_batch_size, settings.max_text_chars)
            else:
                rows = _input_rows(body, raw[cut:], model.n_features, settings.max_batch_size)
        except ProtocolError:
            raise
        except Exception as problem:  # noqa: BLE001 (whatever else a malformed tensor breaks is the client's error)
            raise ProtocolError(f"malformed input tensor: {type(problem).__name__}: {problem}") from None
        requested = body.get("outputs") or []
        if not isinstance(requested, list):
            raise ProtocolError("'outputs' must be a list of {\"name\": ...}")
        wanted = [o.get("name") for o in requested if isinstance(o, dict)] or list(OUTPUTS)
        unknown = [o for o in wanted if o not in OUTPUTS]
        if unknown:
            raise ProtocolError(f"unknown output(s) {unknown}; this model has {list(OUTPUTS)}")
        try:
            indices, probabilities = await state.batcher.infer(rows, "probabilities" in wanted)
        except BatcherClosed as problem:
            raise ProtocolError(str(problem), 503) from None
        except NotImplementedError as problem:
            raise ProtocolError(f"this model cannot give probabilities: {problem}") from None
        except ValueError as problem:  # the model's own input checks
            raise ProtocolError(str(problem)) from None
    except ProtocolError as problem:
        return error(str(problem), problem.status)
    outputs: list[dict[str, Any]] = []
    if "predictions" in wanted:
        classes = model.metadata["classes"]
        datatype = _class_datatype(classes)
        data = [classes[i] if datatype == "INT64" else str(classes[i]) for i in indices]
        outputs.append({"name": "predictions", "datatype": datatype, "shape": [len(data)], "data": data})
    if "probabilities" in wanted and probabilities is not None:
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": list(probabilities.shape),
                        "data": probabilities.astype(np.float64).ravel().tolist()})
    response: dict[str, Any] = {"model_name": state.settings.model_name,
                                "model_version": model.metadata["sha256"][:12], "outputs": outputs}
    if "id" in body:
        response["id"] = body["id"]
    return JSONResponse(response)


def _class_datatype(classes: list[Any]) -> str:
    return "INT64" if all(isinstance(c, int) and not isinstance(c, bool) for c in classes) else "BYTES"
