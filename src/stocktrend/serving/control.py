"""Deploying, inspecting and promoting the Serve application through the Ray dashboard's REST
API (what `serve deploy` uses): the deployment is declarative, so changing only the model
version in a deployment's user config is applied in place by ``reconfigure``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from stocktrend.serving.config import PREDICTOR_DEPLOYMENT, ROOT, ServeArgs
from stocktrend.serving.routes import Route, Routing, initial_routing, served_models

log = logging.getLogger(__name__)

DEFAULT_CONFIG = ROOT / "serve" / "config.yaml"
DEFAULT_DASHBOARD = "http://127.0.0.1:8265"


class ServeControlError(RuntimeError):
    pass


class NothingDeployed(ServeControlError):
    """The head answers, and serves no application deployed from a config."""


def find_dashboard(explicit: str | None = None) -> tuple[str | None, bool]:
    """(dashboard URL, whether it is the cluster this process joins): ``explicit``, else
    $RAY_DASHBOARD_ADDRESS, else the running head's (found as `ray job submit` finds it);
    (None, False) when there is none. A remote dashboard named explicitly is not the local
    cluster: resource and port checks made through this process would look at another one."""
    from stocktrend.cluster.connect import running_dashboard

    found = running_dashboard()
    given = explicit or os.environ.get("RAY_DASHBOARD_ADDRESS")
    if given:
        given = given.rstrip("/")
        if not head_reachable(given):
            raise ServeControlError(f"no Ray dashboard answers at {given}")
        return given, given == found
    return found, found is not None


def head_reachable(dashboard: str) -> bool:
    try:
        urllib.request.urlopen(f"{dashboard}/api/version", timeout=3)
        return True
    except urllib.error.HTTPError:  # 401 without a token: something answers
        return True
    except OSError:
        return False


def start_head(dashboard: str) -> None:
    """A persistent local head whose dashboard is at ``dashboard`` (it outlives this process;
    `make stop` ends it): the same start-up as `make head`."""
    from stocktrend.cluster.head import HeadError
    from stocktrend.cluster.head import start_head as start
    from stocktrend.cluster.ports import HeadPorts, PortInUse

    port = int(dashboard.rsplit(":", 1)[-1].strip("/"))
    log.info("no Ray head at %s: starting one", dashboard)
    try:
        start(HeadPorts(dashboard=port))
    except (HeadError, PortInUse) as err:
        raise ServeControlError(str(err)) from err


def client(dashboard: str):
    """Serve's REST client, sending the Ray token itself (no RAY_AUTH_MODE needed in the shell)."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from stocktrend.cluster.auth import auth_headers

    return ServeSubmissionClient(dashboard, headers=auth_headers())


def check_http_port(dashboard: str, config: dict[str, Any]) -> None:
    """Serve's HTTP port: a head already serving keeps its port (Serve cannot move it while
    running); on a head not serving yet, the port must be free."""
    from stocktrend.cluster.ports import holder, port_taken

    port = int((config.get("http_options") or {}).get("port", 8000))
    details = client(dashboard).get_serve_details()
    serving = details.get("applications") or details.get("proxies")  # Serve started on this head
    running = (details.get("http_options") or {}).get("port") if serving else None
    if running is not None and int(running) != port:
        raise ServeControlError(f"Serve on this head already listens on port {running}; deploy with --port {running}, "
                                "or remove the running applications first (`serve shutdown -y`)")
    if running is None and port_taken(port):
        who = holder(port)
        raise ServeControlError(f"port {port} (Serve HTTP) is already in use{f' by {who}' if who else ''}: "
                                "stop that program or deploy with --port <another port>")


def replica_ask(config: dict[str, Any]):
    """The resources the config's applications need to start, as a preflight Ask."""
    from stocktrend.cluster.resources import Ask

    units, per_unit, names = 0, {"CPU": 0.0, "GPU": 0.0}, []
    for a in config["applications"]:
        args = ServeArgs(**(a.get("args") or {}))
        units += args.autoscaling.min_replicas if args.autoscaling else args.num_replicas
        for key, amount in {"CPU": args.num_cpus, "GPU": args.num_gpus, **args.resources}.items():
            per_unit[key] = max(per_unit.get(key, 0.0), amount)
        names.append(a["name"])
    return Ask(f"Serve deployment {', '.join(repr(n) for n in names)}", per_unit, units, "replica",
               hint="--num-cpus F / --num-gpus F / --resources (a share per replica) or --replicas N")


def preflight(config: dict[str, Any], wait_s: float = 0.0) -> None:
    """Fail before deploying when the replicas cannot be placed; the replicas of the
    applications being replaced free their resources for the new ones, so they count as free."""
    import ray
    from ray.util.state import list_actors

    from stocktrend.cluster import resources

    ask = replica_ask(config)
    if ask.units == 0:
        return
    replaced = {a["name"] for a in config["applications"]}
    nodes = {node: dict(r) for node, r in ray._private.state.available_resources_per_node().items()}
    for actor in list_actors(address=resources.state_address(), filters=[("state", "=", "ALIVE")], detail=True,
                             limit=10_000, raise_on_missing_output=False):
        cls = actor.class_name or ""
        if cls.startswith("ServeReplica:") and cls.split(":")[1] in replaced and actor.node_id in nodes:
            node = nodes[actor.node_id]
            node["CPU"] = node.get("CPU", 0.0) + (actor.required_resources or {}).get("CPU", 0.0)
    if resources.units_that_fit(ask.per_unit, list(nodes.values())) < ask.units:
        resources.require(ask, wait_s)  # raises with the whole story unless it frees up meanwhile


def load_config(path: str | Path = DEFAULT_CONFIG) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def app_config(config: dict[str, Any], app: str | None = None) -> dict[str, Any]:
    apps = config.get("applications") or []
    for a in apps:
        if app is None or a.get("name") == app:
            return a
    raise ServeControlError(f"no application {app!r} in the Serve config (has {[a.get('name') for a in apps]})")


def with_overrides(config: dict[str, Any], app: str | None, args: dict[str, Any], http: dict[str, Any],
                   name: str | None = None, route_prefix: str | None = None) -> dict[str, Any]:
    """A copy of ``config`` with builder args and HTTP options overridden; args validated here
    (the same pydantic model Serve validates with), and the model path made absolute, since
    Serve builds the application in a worker whose folder is not ours."""
    config = copy.deepcopy(config)
    target = app_config(config, app)
    merged = {**(target.get("args") or {}), **{k: v for k, v in args.items() if v is not None}}
    if merged.get("num_replicas") is not None:
        merged.pop("autoscaling", None)  # fixed replicas asked for: not both
    parsed = ServeArgs(**merged)
    merged["model"] = str(parsed.resolved_model())
    if parsed.models:
        merged["models"] = [str(m) for m in parsed.resolved_models()]
    target["args"] = merged
    if name:
        target["name"] = name
    if route_prefix:
        target["route_prefix"] = route_prefix
    config["http_options"] = {**(config.get("http_options") or {}), **{k: v for k, v in http.items() if v is not None}}
    return config


def app_details(dashboard: str, app: str) -> dict[str, Any] | None:
    return (client(dashboard).get_serve_details().get("applications") or {}).get(app)


def wait_running(dashboard: str, app: str, timeout: float = 300, routing: Routing | None = None) -> dict[str, Any]:
    """Until the application is RUNNING (and, with ``routing``, its Predictor's user config
    names those routes); raise with Serve's own message when it fails."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        details = app_details(dashboard, app)
        if details:
            last = details
            status = details.get("status")
            if status == "DEPLOY_FAILED":  # the why (a replica's constructor error) is on the deployments
                why = "; ".join(f"{n}: {d.get('message')}" for n, d in (details.get("deployments") or {}).items()
                                if d.get("message"))
                raise ServeControlError(f"application {app!r} failed to deploy: {details.get('message')}"
                                        + (f" ({why[-3000:]})" if why else ""))
            deployments = details.get("deployments") or {}
            dep = deployments.get(PREDICTOR_DEPLOYMENT, {})
            pinned = (dep.get("deployment_config") or {}).get("user_config") or {}
            healthy = bool(deployments) and all(d.get("status") == "HEALTHY" for d in deployments.values())
            if status == "RUNNING" and healthy and (routing is None or pinned == routing.user_config()):
                return details
            for name, d in deployments.items():
                if d.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
                    log.warning("deployment %s: %s %s", name, d.get("status"), d.get("message"))
        time.sleep(1)
    message = json.dumps({k: (last or {}).get(k) for k in ("status", "message")})
    # Serve says why a replica waits (resources, a runtime environment being set up) on the
    # deployment, not on the application.
    waiting = "; ".join(f"{n}: {d.get('status')} {d.get('message')}" for n, d in
                        ((last or {}).get("deployments") or {}).items() if d.get("message"))
    raise ServeControlError(f"application {app!r} not running after {timeout:.0f} s: {message}"
                            + (f"; deployments: {waiting}" if waiting else ""))


def deploy(dashboard: str, config: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Deploy every application of ``config`` (replacing what the head serves) and wait."""
    client(dashboard).deploy_applications(config)
    return {a["name"]: wait_running(dashboard, a["name"], timeout) for a in config["applications"]}


def deployed_config(dashboard: str) -> dict[str, Any]:
    """The declarative config the head is serving now (every application)."""
    details = client(dashboard).get_serve_details()
    apps = details.get("applications") or {}
    configs = [a["deployed_app_config"] for a in apps.values() if a.get("deployed_app_config")]
    if not configs:
        raise NothingDeployed(f"no application deployed from a config on the head at {dashboard}; "
                                "deploy with ray_jobs/deploy.py or `serve deploy` first")
    http = details.get("http_options") or {}
    return {"proxy_location": details.get("proxy_location") or "HeadOnly",
            "http_options": {k: http[k] for k in ("host", "port") if k in http}, "applications": configs}


def apps_serving(config: dict[str, Any], model_dir: Path) -> list[str]:
    """Names of the applications serving ``model_dir`` (as ``model`` or among ``models``,
    the folder itself or one of its versions)."""
    model_dir = model_dir.resolve()
    names = []
    for a in config["applications"]:
        args = a.get("args") or {}
        paths = [Path(p) for p in [args.get("model", ""), *(args.get("models") or [])]]
        if any(path == model_dir or path.parent == model_dir for path in paths):
            names.append(a["name"])
    return names


def _predictor_entry(target: dict[str, Any]) -> dict[str, Any]:
    deployments = target.setdefault("deployments", [])
    entry = next((d for d in deployments if d.get("name") == PREDICTOR_DEPLOYMENT), None)
    if entry is None:
        entry = {"name": PREDICTOR_DEPLOYMENT}
        deployments.append(entry)
    return entry


def current_routing(target: dict[str, Any]) -> Routing:
    """The routes an application's config pins, else the ones its builder starts with."""
    pinned = (_predictor_entry(target).get("user_config") or {})
    if pinned.get("routing"):
        return Routing.from_user_config(pinned)
    return initial_routing(served_models(ServeArgs(**(target.get("args") or {}))))


def pin_routing(target: dict[str, Any], routing: Routing) -> None:
    """Name the routes in the application's Predictor user config. Serve re-runs the builder
    only when the code, its args or the runtime env change; the user config is what a
    redeploy of the same model folders, a promotion or a moved split changes in place."""
    _predictor_entry(target)["user_config"] = routing.user_config()


class RoutesRestored(ServeControlError):
    """A route change failed and every application was put back on its previous routes."""


def set_route(dashboard: str, app: str, name: str, route: Route, timeout: float = 300) -> Routing:
    """Give model ``name`` of application ``app`` a new route (``set_routes`` for one)."""
    return set_routes(dashboard, [app], name, route, timeout)[app]


def set_routes(dashboard: str, apps: list[str], name: str, route: Route, timeout: float = 300,
               attempts: int = 3) -> dict[str, Routing]:
    """Give model ``name`` a new route in every one of ``apps``, as one change: a lightweight
    in-place update (Serve calls ``reconfigure`` on the live replicas); returns once every
    replica of every application serves it.

    Compare-and-swap: the applications' configs are read, changed, and read again just
    before the change is sent; if anyone changed them meanwhile (another promoter on another
    machine, the dashboard), the change is made again on what they left, never over it.
    (Promoters on one machine also take turns: ``retraining.lock.routes_lock``.) All
    applications switch in one deployment of the config; if any fails to switch, every one
    is put back on its previous routes and RoutesRestored says so."""
    for _ in range(attempts):
        before = deployed_config(dashboard)
        config = copy.deepcopy(before)
        routings = {}
        for app in apps:
            target = app_config(config, app)
            routing = current_routing(target)
            if name not in routing.models:
                raise ServeControlError(f"application {app!r} does not serve a model named {name!r} "
                                        f"(it serves {sorted(routing.models)})")
            routings[app] = Routing(default=routing.default, models={**routing.models, name: route})
            pin_routing(target, routings[app])
        if _apps(deployed_config(dashboard), apps) != _apps(before, apps):
            log.warning("the Serve config of %s changed while this change was prepared: preparing it again", apps)
            continue
        client(dashboard).deploy_applications(config)
        try:
            for app in apps:
                wait_running(dashboard, app, timeout, routing=routings[app])
        except ServeControlError as err:
            restore(dashboard, before, apps, timeout)
            raise RoutesRestored(f"{err}; every application ({', '.join(apps)}) is back on its previous routes") from None
        return routings
    raise ServeControlError(f"the Serve config of {apps} kept changing while this change was prepared "
                            f"({attempts} attempts); nothing was changed: try again")


def restore(dashboard: str, before: dict[str, Any], apps: list[str], timeout: float) -> None:
    """Put ``apps`` back on the routes ``before`` pinned (their replicas that failed to switch
    are replaced with ones on the previous routes)."""
    client(dashboard).deploy_applications(before)
    for app in apps:
        try:
            wait_running(dashboard, app, timeout, routing=current_routing(app_config(copy.deepcopy(before), app)))
        except ServeControlError as err:
            log.error("application %r did not come back on its previous routes: %s", app, err)


def _apps(config: dict[str, Any], apps: list[str]) -> str:
    return json.dumps([a for a in config["applications"] if a.get("name") in apps], sort_keys=True)
