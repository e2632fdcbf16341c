"""Promote a model version, roll back, or run a challenger beside the champion, in place.

    python ray_jobs/promote.py --model models/<name> --version <version>      # a new champion
    python ray_jobs/promote.py --model models/<name> --rollback               # the champion before
    python ray_jobs/promote.py --model models/<name> --challenger <v> --split 0.1   # 10% to <v>
    python ray_jobs/promote.py --model models/<name> --challenger <v> --shadow      # <v> scores, never answers
    python ray_jobs/promote.py --model models/<name> --split 0.25             # move the split
    python ray_jobs/promote.py --model models/<name> --promote-challenger     # the challenger wins
    python ray_jobs/promote.py --model models/<name> --drop-challenger        # the challenger goes
    python ray_jobs/promote.py --model models/<name> --list

The **champion** answers a model's requests; ``models/<name>/latest`` names it, and a new
deployment starts with it. Promoting (``--version``, ``--promote-challenger``,
``--rollback``) verifies the version's sha256 manifest, moves ``latest`` atomically and
records the move in ``models/<name>/promotions.jsonl``; ``--rollback`` promotes the
champion before the last promotion. A **challenger** answers a share of requests (sticky per
``X-Client-Id``) or, with ``--shadow``, scores every request without answering; it never
moves ``latest``, and its moves are logged too. Every application on the Ray head serving
``models/<name>`` gets the new route in its Predictor's user config: Serve calls
``reconfigure`` on the live replicas, which load the versions named before switching, so no
request fails. Without a head (or with --no-serve) only ``latest`` and the log change.

A promotion is a transaction. The version named is verified, loaded and run on a probe
window here before Serve is asked to switch (a version that cannot load never reaches a
replica). Every writer of a model's routes (this, the retrain job, an alert's retrain) takes
the model's routes lock, and a change of the deployed config the deployment's lock, in
turn; the config is changed compare-and-swap; every application serving the model switches
in one change, and if one fails, all are put back on their previous routes (logged as
``restored``) and nothing is recorded as done. Exit status: 0 done; 1 a deployment did not
switch (restored); 2 refused as asked (nothing changed); 3 another promotion held the
routes past --lock-timeout.

On KubeRay the RayService resource owns the Serve config (a change made through the dashboard
is undone at its next reconcile): ``--rayservice [namespace/]name`` moves the route in the
resource's ``serveConfigV2`` instead, by a patch conditional on the version read, then waits
for KubeRay to run it, or patches the previous config back (``serving/kuberay.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path

HISTORY = "promotions.jsonl"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/<name>: the folder holding versions and 'latest'")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--version", help="the version folder name to promote to champion")
    which.add_argument("--rollback", action="store_true", help="back to the champion before the last promotion")
    which.add_argument("--challenger", help="run this version beside the champion (with --split or --shadow)")
    which.add_argument("--promote-challenger", action="store_true", help="the serving challenger becomes champion")
    which.add_argument("--drop-challenger", action="store_true", help="stop sending anything to the challenger")
    which.add_argument("--list", action="store_true", help="list versions and the promotion history")
    ap.add_argument("--split", type=float, help="share of requests the challenger answers (0..1)")
    ap.add_argument("--shadow", action="store_true", help="the challenger scores every request, answers none")
    ap.add_argument("--dashboard",
                    help="Ray dashboard URL (default: $RAY_DASHBOARD_ADDRESS, else the head running on this machine)")
    ap.add_argument("--no-serve", action="store_true", help="only move 'latest' and the log; leave deployments alone")
    ap.add_argument("--rayservice", metavar="[NAMESPACE/]NAME",
                    help="on KubeRay: change the route in this RayService resource, not through the dashboard")
    ap.add_argument("--kube-api", help="Kubernetes API server (default: the pod's, from KUBERNETES_SERVICE_HOST; "
                                       "`kubectl proxy` serves one on http://127.0.0.1:8001)")
    ap.add_argument("--kube-token-file", help="bearer token file (default: the pod's service account token)")
    ap.add_argument("--kube-ca", help="CA bundle of the API server (default: the pod's service account CA)")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--lock-timeout", type=float, default=120,
                    help="how long to wait for another promotion of this model (or of this deployment) to end")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if _no_action(args) and args.split is None and not args.shadow:
        ap.error("give one of --version, --rollback, --challenger, --promote-challenger, --drop-challenger, "
                 "--list, or --split/--shadow alone to change the running challenger's share")
    if args.split is not None and not 0 <= args.split <= 1:
        ap.error("--split is a share of requests between 0 and 1")
    if args.shadow and args.split:
        ap.error("--shadow answers with the champion only: give one of --split and --shadow")
    if (args.split is not None or args.shadow) and not (args.challenger or _no_action(args)):
        ap.error("--split/--shadow go with --challenger, or alone to change the running challenger's share")
    if args.challenger and not (args.split or args.shadow):
        ap.error("--challenger needs --split F (0 < F <= 1) or --shadow: otherwise it would get no traffic")
    if args.rayservice and (args.dashboard or args.no_serve):
        ap.error("--rayservice changes the RayService resource: it goes with neither --dashboard nor --no-serve")
    return args


def _no_action(args) -> bool:
    return not any([args.version, args.rollback, args.challenger, args.promote_challenger, args.drop_challenger,
                    args.list])


class PromotionError(RuntimeError):
    pass


def read_history(model_dir: Path) -> list[dict]:
    path = model_dir / HISTORY
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def verified(model_dir: Path, version: str | None) -> str:
    """The version, once its manifest verifies and it loads and answers a probe window (the
    training mean of every feature) on the torch back-end, as a replica would load it."""
    import numpy as np

    from stocktrend.inference.artifact import ArtifactError, verify
    from stocktrend.inference.predictor import Predictor

    try:
        if not version or "/" in version or version.startswith("."):
            raise ArtifactError("not a version folder name")
        verify(model_dir / version)
        predictor = Predictor.from_artifact(model_dir / version)
        probs = predictor.predict_windows(np.zeros((1, predictor.seq_len, predictor.n_features), np.float32)).probs
        if not np.isfinite(probs).all():
            raise ArtifactError("answers a probe window with non-finite probabilities")
    except ArtifactError as err:
        raise PromotionError(f"version {version!r}: {err}") from None
    except Exception as err:  # anything a replica's load would hit too
        raise PromotionError(f"version {version!r} does not load: {type(err).__name__}: {err}") from None
    return version


class Deployments:
    """Where the model's routes are changed: a Ray head's Serve config through its dashboard,
    or a RayService resource on KubeRay (``kube``: (KubeApi, namespace, name)), or nowhere."""

    def __init__(self, dashboard: str | None = None, kube: tuple | None = None):
        self.dashboard, self.kube = dashboard, kube

    def __str__(self) -> str:
        if self.kube:
            return f"RayService {self.kube[1]}/{self.kube[2]}"
        return self.dashboard or "no Ray head found"

    def route(self, model_dir: Path):
        """(the route the first application serving the model has, the applications serving it)."""
        if self.kube:
            from stocktrend.serving import kuberay

            return kuberay.current_route(*self.kube, model_dir.name)
        return serving_route(model_dir, self.dashboard)

    def set_routes(self, apps: list[str], name: str, route, timeout: float) -> None:
        from stocktrend.serving import control, kuberay

        if self.kube:
            kuberay.set_routes(*self.kube, name, route, timeout=timeout)
        else:
            control.set_routes(self.dashboard, apps, name, route, timeout=timeout)


def serving_route(model_dir: Path, dashboard: str | None):
    """(the route the first application serving the model has, the applications serving it)."""
    from stocktrend.serving import control

    if dashboard is None:
        return None, []
    try:
        config = control.deployed_config(dashboard)
    except control.ServeControlError:
        return None, []
    apps = control.apps_serving(config, model_dir)
    if not apps:
        return None, []
    return control.current_routing(control.app_config(config, apps[0])).models.get(model_dir.name), apps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from stocktrend.inference.artifact import ArtifactError, resolve_version_dir
    from stocktrend.serving import control
    from stocktrend.serving.routes import versions_on_disk

    model_dir = Path(args.model).resolve()
    history = read_history(model_dir)
    try:
        current = resolve_version_dir(model_dir).name
    except ArtifactError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.list:
        for v in versions_on_disk(model_dir):
            print(("* " if v == current else "  ") + v)
        for h in history:
            if "to" in h:
                print(f"{h['time']}  champion {h['from']} -> {h['to']}{' (rollback)' if h.get('rollback') else ''}")
            elif "route" in h:
                print(f"{h['time']}  {h['action']}: {json.dumps(h['route'])}")
            else:  # written by ray_jobs/retrain.py
                print(f"{h['time']}  {h['action']} {h.get('challenger')}: {h.get('decision')}: {h.get('reason', '')}")
        return 0

    where = Deployments()
    try:
        if args.rayservice:
            from stocktrend.serving import kuberay

            api = kuberay.KubeApi.from_env(args.kube_api, args.kube_token_file, args.kube_ca)
            where = Deployments(kube=(api, *kuberay.parse_target(args.rayservice)))
        elif not args.no_serve:
            where = Deployments(dashboard=control.find_dashboard(args.dashboard)[0])
    except control.ServeControlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from stocktrend.retraining.lock import ModelLocked, routes_lock

    try:
        # The RayService's own resourceVersion orders its writers; the folder lock still
        # orders this model's promoters on the shared volume.
        with routes_lock(model_dir, where.dashboard, args.lock_timeout):
            return _move(args, model_dir, where)
    except ModelLocked as err:
        print(f"error: {err}", file=sys.stderr)
        return 3


def _move(args: argparse.Namespace, model_dir: Path, where: Deployments) -> int:
    """The route change itself, under the routes lock: everything read here is current."""
    from stocktrend.data.store import atomic_write_text
    from stocktrend.inference.artifact import LATEST, resolve_version_dir
    from stocktrend.serving import control
    from stocktrend.serving.routes import Route

    history = read_history(model_dir)
    current = resolve_version_dir(model_dir).name
    try:
        serving, apps = where.route(model_dir)
    except control.ServeControlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    route = serving or Route(champion=current)
    current = route.champion  # what answers now (`latest` may name a version trained since)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    champion_move = bool(args.version or args.rollback or args.promote_challenger)
    try:
        if not champion_move and not apps:
            raise PromotionError(f"no application ({where}) serves {model_dir}: a challenger lives in a "
                                 "deployment's route (deploy the model first)")
        if champion_move:
            if args.rollback:
                moves = [h for h in history if "to" in h]
                if not moves:
                    raise PromotionError(f"nothing to roll back: {model_dir / HISTORY} records no promotion")
                target = moves[-1]["from"]
            elif args.promote_challenger:
                if route.challenger is None:
                    raise PromotionError(f"{model_dir.name} has no challenger to promote")
                target = route.challenger
            else:
                target = args.version
            verified(model_dir, target)
            new = Route(champion=target) if route.challenger in (None, target) else \
                Route(champion=target, challenger=route.challenger, split=route.split, shadow=route.shadow)
            entry = {"time": now, "from": current, "to": target, "rollback": bool(args.rollback),
                     "challenger_promoted": bool(args.promote_challenger)}
        else:
            if args.challenger:
                new = Route(champion=route.champion, challenger=verified(model_dir, args.challenger),
                            split=args.split or 0.0, shadow=args.shadow)
                action = "challenger"
            elif args.drop_challenger:
                new, action = Route(champion=route.champion), "drop challenger"
            else:
                if route.challenger is None:
                    raise PromotionError(f"{model_dir.name} has no challenger ({where}); "
                                         "start one with --challenger <version>")
                new = Route(champion=route.champion, challenger=route.challenger, split=args.split or 0.0,
                            shadow=args.shadow)
                action = "route"
            entry = {"time": now, "action": action, "route": new.model_dump()}
    except (PromotionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    # The deployments first, all in one change: `latest` and the log record only what took effect.
    if apps:
        try:
            where.set_routes(apps, model_dir.name, new, args.timeout)
        except control.ServeControlError as err:
            restored = isinstance(err, control.RoutesRestored)
            if restored:
                failed = {"time": now, "action": "restored", "attempted": new.model_dump(), "applications": apps,
                          "error": str(err)[:2000]}
                atomic_write_text(model_dir / HISTORY, "".join(json.dumps(h) + "\n" for h in [*history, failed]))
            print(f"error: {err}; 'latest' left as it was" + (f" (logged in {HISTORY})" if restored else ""),
                  file=sys.stderr)
            return 1
        for app in apps:
            print(f"application {app!r} now routes {model_dir.name}: {json.dumps(new.model_dump())}")
    if champion_move:
        atomic_write_text(model_dir / LATEST, new.champion + "\n")
        print(f"{model_dir.name}: champion {current} -> {new.champion} ('latest' names it)")
    atomic_write_text(model_dir / HISTORY, "".join(json.dumps(h) + "\n" for h in [*history, entry]))
    if not apps and not args.no_serve:
        print(f"no deployment serves this model ({where}): only 'latest' and the log changed")
    return 0

if __name__ == "__main__":
    sys.exit(main())
