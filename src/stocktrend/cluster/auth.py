"""The Ray token that the project's heads and clients share.

Ray 2.60's token authentication, as the installed Ray behaves (checked with an empty home
folder; the README's "A Ray head, job submission and the dashboard" says it for users):

- ``ray start --head`` never writes a token. With ``RAY_AUTH_MODE=token`` it refuses to start
  without one; with the mode unset it starts in token mode only if a token already exists.
- A client (the ``ray``/``serve`` CLI, the job and Serve REST clients, ``ray.init`` to an
  explicit address) sends the token only when ``RAY_AUTH_MODE=token`` is in its own
  environment; ``ray.init()`` finding a local head by itself turns it on when a token exists.
- Ray looks for the token in ``RAY_AUTH_TOKEN``, then the file ``RAY_AUTH_TOKEN_PATH``, then
  ``~/.ray/auth_token``.

So the project creates the token the first time a head needs one (``ensure_token``), and
every entry point makes itself a token-mode client (``use_token_auth``): no exported variable
is needed for ``python ray_jobs/*.py``. Ray's own CLI needs ``RAY_AUTH_MODE=token`` in the
shell; the project's virtual environment's ``activate`` script sets it.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# The one command that shows a person the token (the dashboard's login page asks for it).
SHOW_TOKEN_COMMAND = "ray get-auth-token"


def token_path() -> Path:
    """Where Ray reads the token file from (``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``)."""
    return Path(os.environ.get(TOKEN_PATH_ENV) or Path.home() / ".ray" / "auth_token").expanduser()


def read_token() -> str | None:
    """The token Ray would use, or None when there is none yet."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip()
    path = token_path()
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise RuntimeError(f"cannot read the Ray token file {path}: {err}") from err
    return token or None


def ensure_token() -> str:
    """The existing token, or a new one written to ``token_path()`` (mode 0600).

    Created by a hard link from a fully written temporary file, which fails if the file
    appeared meanwhile: two processes racing here end up with the same token, never with a
    head started on one token while the file holds another.
    """
    token = read_token()
    if token:
        return token
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auth_token.")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))  # 256 bits, as `ray get-auth-token --generate` makes
        try:
            os.link(tmp, path)
            log.info("created the Ray authentication token %s", path)
        except FileExistsError:
            pass  # another process won the race: use its token
    finally:
        Path(tmp).unlink(missing_ok=True)
    token = read_token()
    if not token:
        raise RuntimeError(f"the Ray token file {path} is empty; delete it and run again")
    return token


def use_token_auth() -> bool:
    """Make this process a token-mode Ray client when a token exists (or was asked for).

    Respects an explicit ``RAY_AUTH_MODE`` (e.g. ``disabled`` for a head without
    authentication). Works before or after Ray is imported. Returns whether token mode is on.
    """
    mode = os.environ.get(MODE_ENV)
    if mode is not None:
        return mode.lower() == "token"
    if read_token() is None:
        return False  # a head in token mode would have needed one: this cluster has none
    os.environ[MODE_ENV] = "token"
    if "ray._raylet" in sys.modules:  # Ray read its config at import: make it look again
        from ray._raylet import Config

        Config.initialize("")
    return True


def auth_headers() -> dict[str, str]:
    """The HTTP header Ray's dashboard (job and Serve REST APIs, login) accepts."""
    token = read_token()
    return {"Authorization": f"Bearer {token}"} if token else {}
