"""promote.py --rayservice: a route moved in the RayService resource that owns the Serve config.

No Kubernetes cluster runs here. The promoter talks HTTP to a local endpoint on 127.0.0.1 that
answers the Kubernetes API's RayService calls as the API server does for a CRD: GET, and
PATCH as a JSON merge patch whose resourceVersion is a precondition (409 Conflict), each
patched object validated against the vendored KubeRay CRD schema (tests/test_k8s_crds.py;
invalid: 422). KubeRay's side (observing a generation, each application's status) is set by
the test through ``APIServer.settle``, as KubeRay would report it.
"""

from __future__ import annotations

import copy
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from test_k8s_crds import errors_for

PATH = "/apis/ray.io/v1/namespaces/prod/rayservices/stocktrend"


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class APIServer:
    """One RayService, as the API server keeps it."""

    def __init__(self, obj: dict):
        self.obj = obj
        self.lock = threading.Lock()
        self.patches: list[dict] = []
        self.rejected: list[str] = []
        self.before_patch = None  # a hook: another writer acting between a read and a patch
        self.app_status = lambda config, app: "RUNNING"  # what KubeRay reports once it ran a generation
        self.settle()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != PATH:
                    return self._reply(404, {"kind": "Status", "reason": "NotFound", "message": self.path})
                with server.lock:
                    self._reply(200, server.obj)

            def do_PATCH(self):
                if self.path != PATH:
                    return self._reply(404, {"kind": "Status", "reason": "NotFound", "message": self.path})
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._reply(415, {"kind": "Status", "message": self.headers.get("Content-Type")})
                patch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.before_patch:
                    hook, server.before_patch = server.before_patch, None
                    hook(server)
                code, body = server.patch(patch)
                self._reply(code, body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def patch(self, patch: dict) -> tuple[int, dict]:
        with self.lock:
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != self.obj["metadata"]["resourceVersion"]:
                return 409, {"kind": "Status", "reason": "Conflict", "code": 409,
                             "message": "the object has been modified; please apply your changes to the latest "
                                        "version and try again"}
            new = merge_patch(self.obj, patch)
            spec_only = {k: v for k, v in new.items() if k != "status"}
            spec_only["metadata"] = {k: v for k, v in new["metadata"].items()
                                     if k not in ("resourceVersion", "generation", "namespace")}
            errors = errors_for(spec_only)
            if errors:
                self.rejected.append("; ".join(errors))
                return 422, {"kind": "Status", "reason": "Invalid", "code": 422, "message": "; ".join(errors)}
            self.patches.append(patch)
            changed = new["spec"] != self.obj["spec"]
            new["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
            new["metadata"]["generation"] = self.obj["metadata"]["generation"] + int(changed)
            self.obj = new
            return 200, new

    def settle(self) -> None:
        """KubeRay's report once it has run the current generation."""
        with self.lock:
            config = yaml.safe_load(self.obj["spec"]["serveConfigV2"])
            self.obj["status"] = {"observedGeneration": self.obj["metadata"]["generation"], "activeServiceStatus": {
                "applicationStatuses": {a["name"]: {"status": self.app_status(config, a["name"]), "message": ""}
                                        for a in config["applications"]}}}

    def config(self) -> dict:
        with self.lock:
            return yaml.safe_load(self.obj["spec"]["serveConfigV2"])

    def close(self):
        self.http.shutdown()


def routes(config: dict, app: str = "stocktrend") -> dict | None:
    a = next(a for a in config["applications"] if a["name"] == app)
    for d in a.get("deployments") or []:
        if (d.get("user_config") or {}).get("routing"):
            return d["user_config"]["routing"]["models"]
    return None


@pytest.fixture()
def model(two_versions, tmp_path) -> Path:
    """A private msft_quick with versions v1 and v2 (latest: v2), where the pods would see it."""
    folder = tmp_path / "shared" / "models" / "msft_quick"
    shutil.copytree(two_versions[0].parent, folder, ignore=shutil.ignore_patterns("predictions"))
    return folder


@pytest.fixture()
def api(repo_root, model):
    obj = next(d for d in yaml.safe_load_all((repo_root / "k8s" / "rayservice.yaml").read_text())
               if d and d.get("kind") == "RayService")
    config = yaml.safe_load(obj["spec"]["serveConfigV2"])
    config["applications"][0]["args"]["model"] = str(model)  # the shared volume, as the promoter's pod mounts it
    obj["spec"]["serveConfigV2"] = yaml.safe_dump(config, sort_keys=False)
    obj["metadata"].update(namespace="prod", resourceVersion="100", generation=1)
    server = APIServer(obj)
    yield server
    server.close()


def promote(model: Path, api: APIServer, *flags: str) -> int:
    from conftest import load_job

    return load_job("promote").main(["--model", str(model), "--rayservice", "prod/stocktrend", "--kube-api",
                                     api.url, "--timeout", "5", *flags])


def _settle_after_patches(api: APIServer, n: int = 1):
    """KubeRay acting on each new generation shortly after it is patched."""
    stop = threading.Event()

    def run():
        seen = api.obj["metadata"]["generation"]
        while not stop.wait(0.05):
            if api.obj["metadata"]["generation"] != seen:
                seen = api.obj["metadata"]["generation"]
                api.settle()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return stop


def test_a_challenger_and_a_champion_move_patch_the_rayservice(api, model, capsys):
    stop = _settle_after_patches(api)
    try:
        assert promote(model, api, "--challenger", "v1", "--split", "0.2") == 0, capsys.readouterr().err
        assert routes(api.config()) == {"msft_quick": {"champion": "v2", "challenger": "v1", "split": 0.2,
                                                       "shadow": False}}
        assert promote(model, api, "--promote-challenger") == 0, capsys.readouterr().err
    finally:
        stop.set()
    assert routes(api.config()) == {"msft_quick": {"champion": "v1", "challenger": None, "split": 0.0,
                                                   "shadow": False}}
    assert (model / "latest").read_text().strip() == "v1"
    history = [json.loads(line) for line in (model / "promotions.jsonl").read_text().splitlines()]
    assert [h.get("action") or h.get("to") for h in history] == ["challenger", "v1"]
    # Every patch was conditional on the version read, and valid under KubeRay's schema.
    assert len(api.patches) == 2 and all(p["metadata"]["resourceVersion"] for p in api.patches)
    assert api.rejected == []
    # The rest of the config is as it was (only the Predictor's user config was added).
    app = api.config()["applications"][0]
    assert app["args"]["autoscaling"] == {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 8}


def test_a_change_made_meanwhile_is_kept_and_the_route_made_again_on_it(api, model, capsys, caplog):
    """Another writer changes the resource between the promoter's read and its patch: the
    patch is refused (409), and the promoter makes its change again on what it finds."""
    def other_writer(server: APIServer):
        config = yaml.safe_load(server.obj["spec"]["serveConfigV2"])
        config["applications"][0]["args"]["max_batch_size"] = 16
        code, _ = server.patch({"spec": {"serveConfigV2": yaml.safe_dump(config, sort_keys=False)}})
        assert code == 200

    api.before_patch = other_writer
    stop = _settle_after_patches(api)
    try:
        assert promote(model, api, "--challenger", "v1", "--shadow") == 0, capsys.readouterr().err
    finally:
        stop.set()
    config = api.config()
    assert config["applications"][0]["args"]["max_batch_size"] == 16  # theirs, kept
    assert routes(config)["msft_quick"]["challenger"] == "v1"  # ours, made on theirs
    assert "changed while this change was prepared" in caplog.text
    assert len(api.patches) == 2  # theirs, then ours (the first of ours refused: 409)


def test_a_switch_kuberay_fails_is_patched_back_and_logged(api, model, capsys):
    before = api.obj["spec"]["serveConfigV2"]
    api.app_status = lambda config, app: "DEPLOY_FAILED" if routes(config, app) and routes(config, app)[
        "msft_quick"]["challenger"] else "RUNNING"
    stop = _settle_after_patches(api)
    try:
        assert promote(model, api, "--challenger", "v1", "--split", "0.5") == 1
    finally:
        stop.set()
    err = capsys.readouterr().err
    assert "failed to switch" in err and "back on its previous serveConfigV2" in err, err
    assert api.obj["spec"]["serveConfigV2"] == before
    last = json.loads((model / "promotions.jsonl").read_text().splitlines()[-1])
    assert last["action"] == "restored" and last["attempted"]["challenger"] == "v1"
    assert (model / "latest").read_text().strip() == "v2"


def test_the_endpoint_refuses_what_kuberay_schema_refuses(api):
    """The local endpoint's validation is real: a field the CRD does not have is refused."""
    code, body = api.patch({"spec": {"serveConfigV3": "x"}})
    assert code == 422 and "serveConfigV3" in body["message"]


def test_unreadable_folders_and_unknown_models_name_what_is_wrong(api, model, tmp_path, capsys):
    config = api.config()
    config["applications"][0]["args"]["model"] = "/nowhere/models/msft_quick"
    api.obj["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    assert promote(model, api, "--challenger", "v1", "--split", "0.1") == 1
    assert "pins no routes yet" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(model, other)
    assert promote(other, api, "--challenger", "v1", "--split", "0.1") == 2
    assert "no application (RayService prod/stocktrend) serves" in capsys.readouterr().err
