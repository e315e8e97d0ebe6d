"""HTTP service over a :class:`~gnnaccel.batched.BatchedEngine`: :func:`create_app` (a FastAPI app) and
:func:`serve` (runs it with uvicorn). Needs the ``serve`` extra (``pip install gnnaccel[serve]``).

Routes (JSON in, JSON out):

- ``POST /predict`` ``{"nodes": [ids]}`` -> ``{"scores": [[...], ...], "version": v}``: the model's outputs for
  the nodes (one row per id, duplicates allowed), computed on the graph at engine version ``v`` (the number of
  updates applied to the engine; every ``POST /nodes`` is one).
- ``POST /nodes`` ``{"features": [[...], ...], "edges": [[src, dst], ...]}`` -> ``{"ids": [...], "version": v}``:
  adds ``len(features)`` nodes with those raw features and the edges (PyG flow: message from ``src`` to ``dst``;
  send both directions for a symmetric relation). An endpoint is an existing node id (a non-negative int) or a
  node of this request by position, ``{"new": k}``. ``edges`` may be omitted or empty. ``version`` is the engine
  version this update produced (null if another writer changed the engine at the same time, outside the server).
- ``GET /stats``: per route the request count, the 4xx and 5xx counts and latency quantiles (ms, over the last
  ``latency_window`` requests, measured in the server from request to response); the engine's ``stats()``
  (node and edge counts, version, cache hit rate and invalidations); the request limits.
- ``GET /healthz`` -> ``{"status": "ok", "num_nodes": n, "version": v}``.

Bad requests change nothing and get a JSON ``{"detail": "<what is wrong>"}`` with status 413 (body over
``max_body_bytes``, checked before it is parsed: Content-Length first, then the bytes as they arrive), 400
(not JSON, or JSON with ``NaN`` / ``Infinity`` tokens, which Python's json module would accept) or 422 (a body of
the wrong shape or types, booleans given as numbers, empty lists, negative or unknown node ids, feature rows of
the wrong width, non-finite features, more than ``max_batch`` nodes in one request). An unexpected engine
failure is a 500 with its message; the server keeps serving.

Concurrency: parsing, validation and the engine calls run in the worker threads of Starlette's thread pool, so
the event loop only moves bytes; the engine's readers/writer lock lets predictions run side by side and
serialises them against updates.
"""
import collections
import json
import math
import signal
import socket
import threading
import time
from typing import Any, Dict, List, Optional

import torch

__all__ = ["create_app", "serve", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_BATCH"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH = 4096
ROUTES = ("/predict", "/nodes", "/stats", "/healthz")
_ATTEMPTS = 32  # a prediction that overlapped an update is recomputed, an update raced by another writer redone


def _require_fastapi():
    try:
        import fastapi  # noqa: F401
        import pydantic  # noqa: F401
    except ImportError as exc:
        raise ImportError("gnnaccel.serving needs FastAPI: pip install 'gnnaccel[serve]' (fastapi and uvicorn)"
                          ) from exc


class RequestError(Exception):
    """A request the service refuses: HTTP ``status`` and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------------------ parsing
def _reject_constant(token: str):
    raise RequestError(400, f"malformed JSON: {token} is not a JSON number (non-finite values are not accepted)")


def parse_json(body: bytes) -> Any:
    """Strict JSON of a request body: UTF-8, standard JSON only (no ``NaN`` / ``Infinity`` tokens).

    Raises:
        RequestError(400) naming the problem.
    """
    if not body:
        raise RequestError(400, "empty request body: expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"malformed JSON: the body is not UTF-8 ({exc})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        raise RequestError(400, f"malformed JSON: {exc}") from None


def _path(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _short(value: Any) -> str:
    """A request value as the client wrote it (JSON), cut to 60 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validate(model_cls, obj: Any):
    """``model_cls.model_validate(obj)``; a pydantic error -> RequestError(422) naming the first problems."""
    from pydantic import ValidationError

    if not isinstance(obj, dict):
        raise RequestError(422, f"the body must be a JSON object, got {type(obj).__name__}")
    try:
        return model_cls.model_validate(obj)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        parts = [f"{_path(e['loc'])}: {e['msg']}" + ("" if e["type"] == "missing" else f" (got {_short(e['input'])})")
                 for e in errors[:3]]
        more = f" (and {len(errors) - 3} more problems)" if len(errors) > 3 else ""
        raise RequestError(422, "; ".join(parts) + more) from None


_MODELS: Dict[str, Any] = {}


def _models():
    """The request schemas (pydantic models), built on first use so that importing this module needs nothing."""
    if not _MODELS:
        from typing import Annotated

        from pydantic import BaseModel, ConfigDict, Field

        NodeId = Annotated[int, Field(strict=True, ge=0)]
        Feature = Annotated[float, Field(strict=True, allow_inf_nan=False)]

        class PredictRequest(BaseModel):
            """``{"nodes": [ids]}``."""
            model_config = ConfigDict(extra="forbid")
            nodes: List[NodeId] = Field(min_length=1)

        class NodesRequest(BaseModel):
            """``{"features": [[...]], "edges": [[src, dst], ...], "edge_weight": [...]}``; endpoints checked in
            _Service; ``edge_weight`` (one finite value per edge) exactly when the served graph is weighted."""
            model_config = ConfigDict(extra="forbid")
            features: List[List[Feature]] = Field(min_length=1)
            edges: List[List[Any]] = Field(default_factory=list)
            edge_weight: Optional[List[Feature]] = None

        _MODELS.update(predict=PredictRequest, nodes=NodesRequest)
    return _MODELS


# ------------------------------------------------------------------------------------------------ statistics
class _RouteStats:
    """Request / error counts and a window of recent latencies per route (thread safe)."""

    def __init__(self, window: int):
        self._lock = threading.Lock()
        self._window = window
        self._routes = {r: self._empty() for r in ROUTES + ("other",)}

    def _empty(self):
        return {"requests": 0, "client_errors": 0, "server_errors": 0,
                "latency": collections.deque(maxlen=self._window)}

    def record(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            r = self._routes[route if route in self._routes else "other"]
            r["requests"] += 1
            if 400 <= status < 500:
                r["client_errors"] += 1
            elif status >= 500:
                r["server_errors"] += 1
            r["latency"].append(seconds)

    def snapshot(self) -> dict:
        with self._lock:
            routes = {k: dict(v, latency=list(v["latency"])) for k, v in self._routes.items()}
        out = {}
        for name, r in routes.items():
            lat = r.pop("latency")
            if lat:
                q = torch.quantile(torch.tensor(lat, dtype=torch.float64) * 1e3,
                                   torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)).tolist()
                r["latency_ms"] = {"p50": q[0], "p90": q[1], "p99": q[2], "max": max(lat) * 1e3,
                                   "samples": len(lat)}
            else:
                r["latency_ms"] = None
            out[name] = r
        return out


# ------------------------------------------------------------------------------------------------ service
class _Service:
    """The engine behind the routes: validation against the engine's state, then the engine call."""

    def __init__(self, engine, max_batch: int, max_body_bytes: int, latency_window: int):
        self.engine = engine
        self.max_batch = max_batch
        self.limits = {"max_batch": max_batch, "max_body_bytes": max_body_bytes}
        self.stats = _RouteStats(latency_window)
        self.started = time.time()
        self._write = threading.Lock()  # one /nodes at a time: its ids and version are then known in advance

    def _check_count(self, n: int, what: str) -> None:
        if n > self.max_batch:
            raise RequestError(422, f"too many {what} in one request: {n} > {self.max_batch} (max_batch)")

    def predict(self, body: bytes) -> dict:
        req = _validate(_models()["predict"], parse_json(body))
        self._check_count(len(req.nodes), "nodes")
        engine = self.engine
        top = max(req.nodes)
        # An update increments engine.version inside the engine's write lock, and predict holds the read lock:
        # equal versions before and after mean that the prediction saw the graph of exactly that version.
        for _ in range(_ATTEMPTS):
            version, num_nodes = engine.version, engine.num_nodes
            if top >= num_nodes:  # (checked before the ids become int64: they may not fit)
                i = next(i for i, v in enumerate(req.nodes) if v >= num_nodes)
                raise RequestError(422, f"nodes[{i}]: unknown node id {req.nodes[i]} (the graph has {num_nodes} "
                                        f"nodes, ids 0..{num_nodes - 1})")
            scores = _engine_call(engine.predict, torch.tensor(req.nodes, dtype=torch.long))
            if engine.version == version:
                return {"scores": scores.tolist(), "version": version}
        raise RequestError(503, f"the graph changed during each of {_ATTEMPTS} attempts; retry")

    def _edge_index(self, edges: List[List[Any]], num_new: int, n0: int) -> torch.Tensor:
        """Endpoints (existing ids < n0, or {"new": k}) -> int64 [2, E] with new node k at id n0 + k."""
        flat = []
        for i, edge in enumerate(edges):
            if len(edge) != 2:
                raise RequestError(422, f"edges[{i}]: an edge is [src, dst], got {len(edge)} entries")
            for j, end in enumerate(edge):
                where = f"edges[{i}][{j}]"
                if isinstance(end, dict):
                    k = end.get("new")
                    if set(end) != {"new"} or isinstance(k, bool) or not isinstance(k, int):
                        raise RequestError(422, f"{where}: a new node is {{\"new\": k}} with an int k, got "
                                                f"{_short(end)}")
                    if not 0 <= k < num_new:
                        raise RequestError(422, f"{where}: {{\"new\": {k}}} is not one of this request's "
                                                f"{num_new} new nodes (0..{num_new - 1})")
                    flat.append(n0 + k)
                elif isinstance(end, int) and not isinstance(end, bool):
                    if end < 0:
                        raise RequestError(422, f"{where}: node id {end} is negative")
                    if end >= n0:
                        raise RequestError(422, f"{where}: unknown node id {end} (the graph has {n0} nodes; "
                                                "refer to this request's nodes as {\"new\": k})")
                    flat.append(end)
                else:
                    raise RequestError(422, f"{where}: an endpoint is an existing node id (a non-negative int) "
                                            f"or {{\"new\": k}}, got {_short(end)}")
        if not flat:
            return torch.empty(2, 0, dtype=torch.long)
        return torch.tensor(flat, dtype=torch.long).view(-1, 2).t()

    def add_nodes(self, body: bytes) -> dict:
        req = _validate(_models()["nodes"], parse_json(body))
        engine = self.engine
        k = len(req.features)
        self._check_count(k, "new nodes")
        width = engine.x.shape[1]
        for i, row in enumerate(req.features):
            if len(row) != width:
                raise RequestError(422, f"features[{i}] has {len(row)} values, the model reads {width} features")
        x = torch.tensor(req.features, dtype=engine.x.dtype)
        if not bool(torch.isfinite(x).all()):
            i, j = (~torch.isfinite(x)).nonzero()[0].tolist()
            raise RequestError(422, f"features[{i}][{j}] = {req.features[i][j]!r} is not finite in "
                                    f"{engine.x.dtype}")
        x = x.to(engine.x.device)
        weight = None
        if req.edge_weight is not None:
            if len(req.edge_weight) != len(req.edges):
                raise RequestError(422, f"edge_weight has {len(req.edge_weight)} values for {len(req.edges)} edges")
            # Edge weights in the engine's answer dtype (float32 for an engine storing features at half width).
            weight_dtype = getattr(engine, "out_dtype", engine.x.dtype)
            weight = torch.tensor(req.edge_weight, dtype=weight_dtype)
            if not bool(torch.isfinite(weight).all()):
                raise RequestError(422, f"edge_weight holds a value that is not finite in {weight_dtype}")
            weight = weight.to(engine.x.device)
        with self._write:
            for _ in range(_ATTEMPTS):
                n0, version = engine.num_nodes, engine.version
                edge_index = self._edge_index(req.edges, k, n0).to(engine.x.device)
                try:
                    ids = engine.add_nodes(x, edge_index, weight if edge_index.shape[1] else None, first_id=n0)
                except (ValueError, TypeError) as exc:
                    if engine.num_nodes != n0:  # another writer, outside the server, grew the graph: redo
                        continue
                    raise RequestError(422, str(exc)) from None
                after = engine.version
                return {"ids": ids.tolist(), "version": after if after == version + 1 else None}
        raise RequestError(503, f"the graph grew concurrently during each of {_ATTEMPTS} attempts; retry")

    def health(self) -> dict:
        return {"status": "ok", "num_nodes": int(self.engine.num_nodes), "version": int(self.engine.version)}

    def snapshot(self) -> dict:
        return {"routes": self.stats.snapshot(), "engine": _jsonable(self.engine.stats()),
                "limits": self.limits, "uptime_s": time.time() - self.started}


def _engine_call(fn, *args):
    """An engine call; ValueError / TypeError (input the engine refused) -> 422, anything else propagates."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as exc:
        raise RequestError(422, str(exc)) from None


def _jsonable(value):
    """Engine / cache statistics -> plain JSON values (tensors and numpy scalars to numbers, NaN to null)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ------------------------------------------------------------------------------------------------ ASGI app
async def _read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise RequestError(400, f"invalid Content-Length header {length!r}")
        if int(length) > limit:
            raise RequestError(413, f"request body of {int(length)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Timing:
    """ASGI middleware: the status and the server-side latency of every HTTP request, per route."""

    def __init__(self, app, stats: _RouteStats):
        self.app = app
        self.stats = stats

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.stats.record(scope.get("path", ""), status[0], time.perf_counter() - start)


def create_app(engine, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_batch: int = DEFAULT_MAX_BATCH,
               latency_window: int = 10_000):
    """A FastAPI app serving ``engine`` (routes and error statuses in the module docstring).

    Args:
        engine: a :class:`~gnnaccel.batched.BatchedEngine` (``predict``, ``add_nodes``, ``stats``, ``version``,
            ``num_nodes``, ``x``). The app shares it: it may also be used directly, from other threads.
        max_body_bytes: largest request body accepted (413 above it, before parsing).
        max_batch: most node ids per ``/predict`` and new nodes per ``/nodes`` request (422 above it).
        latency_window: how many recent requests per route the latency quantiles of ``/stats`` cover.

    Returns:
        ``fastapi.FastAPI``.
    """
    _require_fastapi()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    for name, value in (("max_body_bytes", max_body_bytes), ("max_batch", max_batch),
                        ("latency_window", latency_window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for attr in ("predict", "add_nodes", "stats", "version", "num_nodes", "x"):
        if not hasattr(engine, attr):
            raise TypeError(f"create_app needs a BatchedEngine (with .{attr}), got {type(engine).__name__}")
    service = _Service(engine, max_batch, max_body_bytes, latency_window)
    schemas = _models()
    app = FastAPI(title="gnnaccel", summary="GNN inference on a growing graph", docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    async def call(fn, request: Request):
        body = await _read_body(request, max_body_bytes)
        try:
            return JSONResponse(await run_in_threadpool(fn, body))
        except RequestError:
            raise
        except Exception as exc:  # the engine failed on a valid request: report it, keep serving
            return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    def body_schema(name):
        return {"requestBody": {"required": True, "content": {"application/json": {
            "schema": schemas[name].model_json_schema()}}}}

    @app.post("/predict", openapi_extra=body_schema("predict"))
    async def predict(request: Request):
        """Scores of existing nodes: ``{"nodes": [ids]}`` -> ``{"scores": [[...]], "version": v}``."""
        return await call(service.predict, request)

    @app.post("/nodes", openapi_extra=body_schema("nodes"))
    async def nodes(request: Request):
        """New nodes with their edges: ``{"features": [[...]], "edges": [[src, dst]]}`` -> ``{"ids": [...]}``."""
        return await call(service.add_nodes, request)

    @app.get("/stats")
    async def stats():
        """Per-route counts and latency quantiles, and the engine's statistics."""
        return JSONResponse(await run_in_threadpool(service.snapshot))

    @app.get("/healthz")
    async def healthz():
        """Liveness: ``{"status": "ok", "num_nodes": n, "version": v}``."""
        return JSONResponse(service.health())

    app.add_middleware(_Timing, stats=service.stats)
    return app


def _listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (``port`` 0 = a free port chosen by the OS)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(engine, host: str = "127.0.0.1", port: int = 8000, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          max_batch: int = DEFAULT_MAX_BATCH, log_level: str = "warning") -> None:
    """Serve ``engine`` over HTTP with uvicorn until SIGINT / SIGTERM, then return.

    Prints ``gnnaccel serve: listening on http://HOST:PORT`` to stdout once the port is bound (the port the OS
    chose when ``port`` is 0).

    Args:
        engine: a :class:`~gnnaccel.batched.BatchedEngine`.
        host: address to listen on (default loopback only).
        port: TCP port; 0 picks a free one.
        max_body_bytes, max_batch: request limits, see :func:`create_app`.
        log_level: uvicorn's log level (access logs are off).

    Raises:
        ImportError: FastAPI or uvicorn missing. OSError: the address cannot be bound.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError("gnnaccel.serving.serve needs uvicorn: pip install 'gnnaccel[serve]'") from exc
    app = create_app(engine, max_body_bytes=max_body_bytes, max_batch=max_batch)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"gnnaccel serve: listening on http://{shown}:{bound}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off"))
    # uvicorn handles SIGINT / SIGTERM while it runs and re-raises them once stopped (the default handlers would
    # then kill the process or raise KeyboardInterrupt): around it, the signals ask the server to stop, so that
    # serve() returns normally, also for a signal that arrives before uvicorn's own handlers are in place.
    main = threading.current_thread() is threading.main_thread()
    stops = (signal.SIGINT, signal.SIGTERM) if main else ()
    saved = {s: signal.signal(s, lambda *_: setattr(server, "should_exit", True)) for s in stops}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for s, handler in saved.items():
            signal.signal(s, handler)
