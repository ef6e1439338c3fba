"""The model server's plumbing, maintained by the template (`copier update` brings its fixes):

app.py      the ASGI app: state, middleware, routers, error handlers
state.py    ServingState, everything a request may need, created once per process; routes get it as `State`
            (the dependency), /predict from its router's factory (no dependency to resolve per request)
schemas.py  the /predict request and response
routes/     one APIRouter per concern: predict, health (/health, /ready, /metadata), oip (/v2), metrics
batching.py, workers.py, limits.py, metrics.py, predlog.py, source.py: micro-batching, worker processes, the body
limit, Prometheus metrics, the prediction log, model downloads
"""
