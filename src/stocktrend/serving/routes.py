"""Which model version answers a request: model ids, champion and challenger, traffic splits.

A deployment serves one or more models, each a folder ``models/<name>`` of versions. A
request names a model by id, ``<name>`` (its route decides the version) or
``<name>/<version>`` (that version, whatever the route says); no id means the default model
(the builder's ``model``). The routes live in the Predictor's user config, so moving a split
or promoting a version is an in-place ``reconfigure`` (``ray_jobs/promote.py``):

    {"default": "msft", "models": {"msft": {"champion": "v7", "challenger": "v8", "split": 0.1},
                                   "stocks20": {"champion": "v2", "challenger": "v3", "shadow": true}}}

- **split**: the share of traffic the challenger answers. A request with an ``X-Client-Id``
  goes to the same version every time (a hash of the model name and the id, so a client
  sees one model, and raising the split only moves clients towards the challenger); without
  one, each request is drawn at random.
- **shadow**: the champion answers every request; the challenger scores the same windows
  after the answer has gone (off the request's path), for monitoring and realised outcomes.

``latest`` (the file in the model folder) is the champion a new deployment starts with;
promotion moves both.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stocktrend import storage
from stocktrend.inference.artifact import MANIFEST, ArtifactError, local_model_dir, resolve_version_dir
from stocktrend.serving.config import ServeArgs
from stocktrend.serving.wire import ApiError


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid")
    champion: str
    challenger: str | None = None
    split: float = Field(0.0, ge=0.0, le=1.0, description="share of requests the challenger answers")
    shadow: bool = Field(False, description="the challenger scores every request; only the champion answers")

    @model_validator(mode="after")
    def _consistent(self):
        if self.challenger is None and (self.split > 0 or self.shadow):
            raise ValueError("a split or shadow mode needs a challenger")
        if self.challenger is not None and self.challenger == self.champion:
            raise ValueError(f"challenger and champion are the same version ({self.champion})")
        if self.shadow and self.split > 0:
            raise ValueError("shadow mode answers with the champion only: give split 0 with shadow")
        return self

    def versions(self) -> list[str]:
        return [self.champion, *([self.challenger] if self.challenger else [])]


class Routing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: str
    models: dict[str, Route]

    @model_validator(mode="after")
    def _default_served(self):
        if self.default not in self.models:
            raise ValueError(f"default model {self.default!r} has no route (routes: {sorted(self.models)})")
        return self

    @classmethod
    def from_user_config(cls, user_config: dict[str, Any] | None, default: str | None = None) -> Routing:
        """``{"routing": ...}``; an older config's ``{"model_version": v}`` (one model) is read as
        the champion of ``default``, the builder's first model."""
        user_config = user_config or {}
        if "routing" not in user_config and user_config.get("model_version") and default:
            return cls(default=default, models={default: Route(champion=user_config["model_version"])})
        try:
            return cls(**user_config.get("routing", {}))
        except ValidationError as err:
            raise ValueError(f"user_config.routing: {err}") from None

    def user_config(self) -> dict[str, Any]:
        return {"routing": self.model_dump(exclude_defaults=False)}

    def model_ids(self) -> list[str]:
        """Every version a route names, champions first (what a replica loads up front)."""
        ids = [f"{n}/{r.champion}" for n, r in self.models.items()]
        return ids + [f"{n}/{r.challenger}" for n, r in self.models.items() if r.challenger]


def served_models(args: ServeArgs) -> dict[str, Path]:
    """{name: the version folder it starts with} of every served model: the default ``model``
    first, then ``models``; a model folder starts with its ``latest``."""
    out: dict[str, Path] = {}
    for given in [args.model, *args.models]:
        try:
            # A model on object storage: this node's mirror of it (inference.artifact).
            version_dir = resolve_version_dir(local_model_dir(ServeArgs.locate(given)))
        except ArtifactError as err:
            raise ValueError(f"args.model(s): {err}") from None
        name = version_dir.parent.name
        if name in out:
            raise ValueError(f"args.models: two models named {name!r} ({out[name].parent} and {version_dir.parent})")
        out[name] = version_dir
    return out


def model_folder_location(given: str, version_dir: Path) -> str:
    """Where a replica finds the model folder that ``given`` (a model or version folder)
    names: a local folder, or the model folder's object-storage URI."""
    location = ServeArgs.locate(given)
    if not storage.is_remote(location):
        return str(version_dir.parent)
    return storage.parent(location) if storage.exists(storage.join(location, MANIFEST)) else location


def initial_routing(served: dict[str, Path]) -> Routing:
    """Every model answered by the version it starts with, the first model the default."""
    return Routing(default=next(iter(served)), models={n: Route(champion=v.name) for n, v in served.items()})


def versions_on_disk(model_dir: Path) -> list[str]:
    """Version folders with a manifest (an export still being written is a dot-folder: not one)."""
    if not model_dir.is_dir():
        return []
    return sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())


def sticky_unit(name: str, client_id: str) -> float:
    """A client's fixed point in [0, 1) for one model (independent across models)."""
    digest = hashlib.sha256(f"{name}\0{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class Selection:
    """The version a request is answered by, and the one that scores it in the shadow (made
    per request: a plain dataclass, not a validated model)."""

    name: str
    version: str
    role: str
    shadow: str | None = None

    @property
    def model_id(self) -> str:
        return f"{self.name}/{self.version}"


def select(routing: Routing, model_dirs: dict[str, Path], raw_id: str | None, client_id: str | None,
           rng: random.Random | None = None, pinnable: list[str] | None = None) -> Selection:
    """The version answering a request for ``raw_id`` (None: the default model); 404 naming
    what is served when the id names no served model or no version of it on disk. A client
    may pin ``<name>/<version>`` only to a version the routes name or one ``pinnable`` lists
    ("*": any version on disk): otherwise any client could make replicas load every version
    ever trained, retrain losers included, and evict the ones serving."""
    raw_id = (raw_id or routing.default).strip().strip("/")
    name, _, version = raw_id.partition("/")
    if name not in routing.models:
        raise ApiError(404, "model", f"unknown model {raw_id!r}; this deployment serves {sorted(routing.models)} "
                                     "(as <name> or <name>/<version>)")
    route = routing.models[name]
    if version and version not in route.versions() and "*" not in (pinnable or []) and version not in (pinnable or []):
        raise ApiError(403, "model", f"version {version!r} of {name!r} is not served: its routes name "
                                     f"{route.versions()}; a deployment lets clients pin others with pinnable_versions")
    if version:
        # One stat on the request path (no folder scan), and only a plain folder name.
        known = version in route.versions() or (
            "/" not in version and not version.startswith(".") and (model_dirs[name] / version / MANIFEST).is_file())
        if not known:
            raise ApiError(404, "model", f"model {name!r} has no version {version!r}; its versions are "
                                         f"{versions_on_disk(model_dirs[name])}")
        return Selection(name=name, version=version, role="pinned")
    if route.challenger and route.split > 0:
        u = sticky_unit(name, client_id) if client_id else (rng or random).random()
        if u < route.split:
            return Selection(name=name, version=route.challenger, role="challenger")
    return Selection(name=name, version=route.champion, role="champion",
                     shadow=route.challenger if route.shadow else None)
