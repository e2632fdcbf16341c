"""A no-op Serve application with the same HTTP path, body and replica settings as the model
application: benchmarks measure Serve's own overhead with it, in the same run."""

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

api = FastAPI()


@serve.deployment(name="Noop", logging_config={"enable_access_log": False})
@serve.ingress(api)
class Noop:
    @api.post("/v1/predict")
    async def predict(self, request: Request):
        # Reads the body and answers a few bytes, with no parsing: the floor under any app.
        return Response(b'{"bytes":%d}' % len(await request.body()), media_type="application/json")


def build(args: dict) -> serve.Application:
    return Noop.options(num_replicas=int(args.get("num_replicas", 1)),
                        ray_actor_options={"num_cpus": float(args.get("num_cpus", 0.5))},
                        max_ongoing_requests=int(args.get("max_ongoing_requests", 64))).bind()
