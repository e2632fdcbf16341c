"""Deploy a model artifact on Ray Serve (HTTP on 127.0.0.1 unless told otherwise).

    python ray_jobs/deploy.py [--model models/<name>] [--also models/<other> ...] [--backend onnx|...] [--num-gpus F]
                              [--replicas N] [--num-cpus F] [--port P] [--host H]
                              [--config serve/config.yaml] [--dashboard URL] [--predict-latest]

Starts from serve/config.yaml, overrides what is given, validates the builder arguments,
and deploys declaratively through the Ray dashboard (as `serve deploy` does), so that
`ray_jobs/promote.py` can later swap the model in place. Without a Ray head on this
machine it starts one (`ray start --head`) that keeps running after this script ends:
`make stop` ends it and the deployment (Ray's own `ray stop` would stop every Ray head of
the machine, and leave Serve's HAProxy running). Under `ray job submit` it uses the
job's cluster. With --predict-latest it sends the latest day's bars from the model's own
source files to /v1/predict/bars, prints the answer and the equivalent curl line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("deploy")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "serve" / "config.yaml"), help="Serve config to start from")
    ap.add_argument("--app", help="application of the config to deploy (default: its first)")
    ap.add_argument("--model", help="the default model: models/<name> (follows 'latest') or a version folder; "
                                    "or on object storage, s3://bucket/models/<name>")
    ap.add_argument("--also", action="append", metavar="MODEL",
                    help="another model served by the same deployment, addressed by its folder's name with the "
                         "serve_multiplexed_model_id header or ?model= (repeatable)")
    ap.add_argument("--backend", help="torch | bf16 | torch-int8 | onnx | onnx-int8 | cuda (a GPU node) | auto")
    ap.add_argument("--replicas", type=int, help="fixed number of replicas (instead of the config's autoscaling)")
    ap.add_argument("--num-cpus", type=float, help="CPU share per replica")
    ap.add_argument("--num-gpus", type=float, help="GPU share per replica (e.g. 0.25; needed by --backend cuda)")
    from stocktrend.cluster.resources import parse_resources

    ap.add_argument("--resources", type=parse_resources, metavar="JSON",
                    help='custom Ray resources each replica holds (a node type), e.g. \'{"serve_node": 1}\'')
    ap.add_argument("--max-batch-size", type=int)
    ap.add_argument("--host", help="HTTP host (default 127.0.0.1; 0.0.0.0 exposes the service)")
    ap.add_argument("--port", type=int, help="HTTP port (default 8000)")
    ap.add_argument("--dashboard", help="Ray dashboard URL (default: $RAY_DASHBOARD_ADDRESS, else the running "
                                        "head's, else a new local head's http://127.0.0.1:8265)")
    ap.add_argument("--no-start-head", action="store_true", help="fail instead of starting a local Ray head")
    ap.add_argument("--predict-latest", action="store_true", help="then predict the latest day over HTTP")
    ap.add_argument("--timeout", type=float, default=300, help="seconds to wait for the deployment")
    from stocktrend.cluster.resources import add_wait_flag

    add_wait_flag(ap)
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def predict_latest(base_url: str, model_path: str, api_key: str | None) -> None:
    from stocktrend.inference.bars import bars_until
    from stocktrend.inference.predictor import Predictor
    from stocktrend.serving.config import ROOT as PROJECT

    body = {"bars": bars_until(Predictor.from_artifact(model_path), PROJECT / "datasets")}
    request_file = PROJECT / "runs" / "serve" / "latest_bars.json"
    request_file.parent.mkdir(parents=True, exist_ok=True)
    request_file.write_text(json.dumps(body))
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    req = urllib.request.Request(f"{base_url}/v1/predict/bars", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        answer = json.loads(resp.read())
    p = answer["predictions"][0]
    print(f"prediction for the {answer['horizon_days']} trading days after {answer['as_of']} "
          f"(last bar {answer['staleness_days']} days old): {p['direction']} "
          f"(p_up {p['p_up']:.3f}, confidence {p['confidence']:.3f}), model {answer['model_version']}")
    key = " -H 'X-API-Key: $STOCKTREND_API_KEY'" if api_key else ""
    print("the same request with curl:")
    print(f"  curl -s -X POST {base_url}/v1/predict/bars -H 'Content-Type: application/json'{key} "
          f"-d @{request_file.relative_to(Path.cwd()) if request_file.is_relative_to(Path.cwd()) else request_file}")


def find_dashboard(args) -> tuple[str, bool]:
    """The dashboard to deploy through (a new persistent local head when there is none), and
    whether it belongs to the cluster this process joins (then resources and ports are checked)."""
    import os

    from stocktrend.serving import control

    dashboard, local = control.find_dashboard(args.dashboard)
    if dashboard is not None:
        return dashboard, local
    if args.no_start_head or os.environ.get("RAY_ADDRESS"):
        raise control.ServeControlError("no Ray cluster found (RAY_ADDRESS, or a head on this machine)")
    control.start_head(control.DEFAULT_DASHBOARD)
    return control.DEFAULT_DASHBOARD, True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import os

    from pydantic import ValidationError

    from stocktrend.cluster.connect import connect
    from stocktrend.cluster.resources import ResourcesUnavailable
    from stocktrend.serving import control

    try:
        config = control.load_config(args.config)
        config = control.with_overrides(
            config, args.app,
            {"model": args.model, "models": args.also, "backend": args.backend, "num_replicas": args.replicas,
             "num_cpus": args.num_cpus, "num_gpus": args.num_gpus, "resources": args.resources,
             "max_batch_size": args.max_batch_size},
            {"host": args.host, "port": args.port},
        )
        target = control.app_config(config, args.app)
        # Deploy only the chosen application; a config may hold several.
        config["applications"] = [target]
        from stocktrend.inference.artifact import load_parts
        from stocktrend.serving.config import ServeArgs
        from stocktrend.serving.routes import initial_routing, served_models

        served = served_models(ServeArgs(**target["args"]))
        for path in served.values():
            load_parts(path)  # every model verified before anything starts
        version_dir = next(iter(served.values()))  # the default model: --predict-latest asks it
        control.pin_routing(target, initial_routing(served))
        dashboard, local = find_dashboard(args)
        if local:  # join the head found above, for the checks below
            connect()
            control.check_http_port(dashboard, config)
            control.preflight(config, args.wait_for_resources)
        else:
            log.warning("deploying through %s, not the cluster this machine runs: its ports and free "
                        "resources are not checked here", dashboard)
        names = ", ".join(f"{v.parent.name}/{v.name}" for v in served.values())
        print(f"deploying {names} on {target['args'].get('backend', 'onnx')} "
              f"through {dashboard} ...", flush=True)
        control.deploy(dashboard, config, timeout=args.timeout)
    except ValidationError as err:
        print(f"error: {args.config} args: {err}", file=sys.stderr)
        return 2
    except (control.ServeControlError, ResourcesUnavailable, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    http = config["http_options"]
    host = http.get("host", "127.0.0.1")
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{http.get('port', 8000)}"
    print(f"serving {names} at {base_url} (OpenAPI: {base_url}/docs, "
          f"monitoring: {base_url}/v1/monitoring)")
    if args.predict_latest:
        try:
            predict_latest(base_url, str(version_dir), os.environ.get(target["args"].get("api_key_env")
                                                                      or "STOCKTREND_API_KEY"))
        except (urllib.error.URLError, OSError) as err:
            print(f"error: the deployment did not answer: {err}", file=sys.stderr)
            return 1
    print("the Ray head and the deployment keep running; stop both with `make stop`, "
          f"the deployment alone with `serve shutdown -a {dashboard} -y`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
