"""Promotion on KubeRay: the RayService resource owns the Serve config, so a route moves there.

KubeRay reconciles a RayService's Serve applications to its ``spec.serveConfigV2``: a route
changed through the dashboard (``control.set_routes``) is undone at its next reconcile. So
where a RayService serves the model, ``promote.py --rayservice [namespace/]name`` changes the
resource itself, through the Kubernetes API:

1. read the RayService; in ``serveConfigV2`` (a YAML string), pin the new route in the
   Predictor's ``user_config`` of every application serving the model, as ``control`` does
   on a dashboard;
2. send it as a JSON merge patch carrying the ``resourceVersion`` read: the API server
   refuses it (409 Conflict) if anyone changed the resource meanwhile, and the change is
   made again on what they left (compare-and-swap, never lost);
3. wait until KubeRay has acted on that generation (``status.observedGeneration``) and every
   application it changed is RUNNING; if one is DEPLOY_FAILED (or the wait times out), the
   previous ``serveConfigV2`` is patched back, again compare-and-swap, and RoutesRestored
   says so.

KubeRay applies a change of ``user_config`` alone in place: Serve calls ``reconfigure`` on the
live replicas, which load the versions named before switching, as on any head.

The API server is reached as a pod reaches it (``KUBERNETES_SERVICE_HOST``, the service
account's token and CA) or at ``--kube-api`` (``kubectl proxy``'s http://127.0.0.1:8001, which
needs no token). The service account needs ``get`` and ``patch`` on ``rayservices`` in
``ray.io``.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stocktrend.serving.control import RoutesRestored, ServeControlError, app_config, current_routing, pin_routing
from stocktrend.serving.routes import Route, Routing

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
GROUP_VERSION = "ray.io/v1"


class Conflict(ServeControlError):
    """The resource changed since it was read (HTTP 409)."""


@dataclass
class KubeApi:
    """The few calls of the Kubernetes API a promotion makes, with the standard library."""

    server: str
    token: str | None = None
    ca_file: str | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, server: str | None = None, token_file: str | None = None,
                 ca_file: str | None = None) -> KubeApi:
        """``server`` as given, else the in-cluster address; the service account's token and
        CA where they exist (a ``kubectl proxy`` address needs neither)."""
        if server is None:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise ServeControlError("no Kubernetes API server: give --kube-api (e.g. http://127.0.0.1:8001 "
                                        "from `kubectl proxy`) or run in a pod (KUBERNETES_SERVICE_HOST)")
            server = f"https://{host}:{port}"
        token_path = Path(token_file) if token_file else SERVICE_ACCOUNT / "token"
        ca_path = Path(ca_file) if ca_file else SERVICE_ACCOUNT / "ca.crt"
        token = token_path.read_text().strip() if token_path.is_file() else None
        return cls(server.rstrip("/"), token, str(ca_path) if ca_path.is_file() else None)

    def _url(self, namespace: str, name: str) -> str:
        return f"{self.server}/apis/{GROUP_VERSION}/namespaces/{namespace}/rayservices/{name}"

    def _send(self, method: str, url: str, body: dict | None = None,
              content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, json.dumps(body).encode() if body is not None else None, headers,
                                         method=method)
        context = ssl.create_default_context(cafile=self.ca_file) if url.startswith("https") else None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:2000]
            try:
                detail = json.loads(detail).get("message", detail)
            except (ValueError, AttributeError):
                pass
            if err.code == 409:
                raise Conflict(f"{method} {url}: 409 Conflict: {detail}") from None
            raise ServeControlError(f"{method} {url}: HTTP {err.code}: {detail}") from None
        except OSError as err:  # refused, unreachable, TLS
            raise ServeControlError(f"{method} {url}: {err}") from None

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self._send("GET", self._url(namespace, name))

    def merge_patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._send("PATCH", self._url(namespace, name), patch, "application/merge-patch+json")


def parse_target(target: str) -> tuple[str, str]:
    """``namespace/name`` or ``name`` (the pod's namespace, else ``default``)."""
    namespace, _, name = target.rpartition("/")
    if not namespace:
        ns_file = SERVICE_ACCOUNT / "namespace"
        namespace = ns_file.read_text().strip() if ns_file.is_file() else "default"
    if not name:
        raise ServeControlError(f"--rayservice {target!r}: give [namespace/]name")
    return namespace, name


def serve_config(obj: dict[str, Any]) -> dict[str, Any]:
    text = (obj.get("spec") or {}).get("serveConfigV2")
    if not text:
        raise ServeControlError(f"RayService {obj.get('metadata', {}).get('name')!r} has no spec.serveConfigV2")
    config = yaml.safe_load(text)
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        raise ServeControlError("spec.serveConfigV2 holds no list of applications")
    return config


def apps_serving(config: dict[str, Any], model_name: str) -> list[str]:
    """Applications serving a model folder named ``model_name`` (as ``model`` or among
    ``models``, the folder or one of its versions). By name, not path: the promoter may see the
    shared volume at another path than the pods do, and routes are keyed by name anyway."""
    names = []
    for a in config["applications"]:
        args = a.get("args") or {}
        paths = [Path(p) for p in [args.get("model", ""), *(args.get("models") or [])] if p]
        if any(model_name in (p.name, p.parent.name) for p in paths):
            names.append(a["name"])
    return names


def _routing(config: dict[str, Any], app: str) -> Routing:
    try:
        return current_routing(app_config(config, app))
    except (OSError, ValueError) as err:  # no routes pinned yet, and the builder's folders unreadable here
        raise ServeControlError(f"application {app!r} of the RayService pins no routes yet and its model folders "
                                f"cannot be read here ({err}): run the promoter where the pods' shared volume is "
                                f"mounted at the same path (the RayCronJob does)") from None


def current_route(api: KubeApi, namespace: str, name: str, model_name: str) -> tuple[Route | None, list[str]]:
    """(the model's route in the first application serving it, the applications serving it)."""
    config = serve_config(api.get(namespace, name))
    apps = apps_serving(config, model_name)
    if not apps:
        return None, []
    return _routing(config, apps[0]).models.get(model_name), apps


def set_routes(api: KubeApi, namespace: str, name: str, model_name: str, route: Route, timeout: float = 300,
               attempts: int = 5, poll_s: float = 1.0) -> list[str]:
    """Give ``model_name`` the route ``route`` in every application of the RayService serving
    it, in one patch (the module's steps 1-3); returns the applications changed."""
    for _ in range(attempts):
        obj = api.get(namespace, name)
        before = obj["spec"]["serveConfigV2"]
        config = serve_config(obj)
        apps = apps_serving(config, model_name)
        if not apps:
            raise ServeControlError(f"no application of RayService {namespace}/{name} serves a model named "
                                    f"{model_name!r}")
        for app in apps:
            routing = _routing(config, app)
            pin_routing(app_config(config, app), Routing(default=routing.default,
                                                         models={**routing.models, model_name: route}))
        after = yaml.safe_dump(config, sort_keys=False)
        try:
            patched = _patch_config(api, namespace, name, obj["metadata"]["resourceVersion"], after)
        except Conflict:
            log.warning("RayService %s/%s changed while this change was prepared: preparing it again", namespace, name)
            continue
        try:
            wait_applied(api, namespace, name, patched["metadata"].get("generation"), apps, timeout, poll_s)
        except ServeControlError as err:
            _restore(api, namespace, name, before, after)
            raise RoutesRestored(f"{err}; RayService {namespace}/{name} is back on its previous serveConfigV2 "
                                 f"({', '.join(apps)})") from None
        return apps
    raise ServeControlError(f"RayService {namespace}/{name} kept changing while this change was prepared "
                            f"({attempts} attempts); nothing was changed: try again")


def _patch_config(api: KubeApi, namespace: str, name: str, resource_version: str, text: str) -> dict[str, Any]:
    # A resourceVersion in a merge patch is a precondition: the server answers 409 on a mismatch.
    return api.merge_patch(namespace, name, {"metadata": {"resourceVersion": resource_version},
                                             "spec": {"serveConfigV2": text}})


def wait_applied(api: KubeApi, namespace: str, name: str, generation: int | None, apps: list[str],
                 timeout: float, poll_s: float = 1.0) -> None:
    """Until KubeRay has observed ``generation`` and every one of ``apps`` is RUNNING in the
    active cluster; ServeControlError naming the application when one is DEPLOY_FAILED or the
    time is up."""
    deadline, seen = time.monotonic() + timeout, {}
    while True:
        status = api.get(namespace, name).get("status") or {}
        observed = status.get("observedGeneration")
        if generation is None or (observed is not None and observed >= generation):
            seen = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
            failed = {a: seen[a] for a in apps if (seen.get(a) or {}).get("status") == "DEPLOY_FAILED"}
            if failed:
                raise ServeControlError("; ".join(f"application {a!r} failed to switch: {s.get('message', '')}"
                                                  for a, s in failed.items()))
            if all((seen.get(a) or {}).get("status") == "RUNNING" for a in apps):
                return
        if time.monotonic() >= deadline:
            raise ServeControlError(f"RayService {namespace}/{name}: generation {generation} not running after "
                                    f"{timeout:g} s (observed generation {observed}, applications "
                                    f"{ {a: (seen.get(a) or {}).get('status') for a in apps} })")
        time.sleep(poll_s)


def _restore(api: KubeApi, namespace: str, name: str, before: str, attempted: str, attempts: int = 5) -> None:
    """Put ``serveConfigV2`` back to ``before`` unless someone else changed it since our patch
    (then theirs stands, and the log says so)."""
    for _ in range(attempts):
        obj = api.get(namespace, name)
        if obj["spec"]["serveConfigV2"] != attempted:
            log.error("RayService %s/%s changed after the failed switch: left as the other writer set it",
                      namespace, name)
            return
        try:
            _patch_config(api, namespace, name, obj["metadata"]["resourceVersion"], before)
            return
        except Conflict:
            continue
    log.error("RayService %s/%s could not be put back on its previous serveConfigV2", namespace, name)
