"""First contact: the README's commands on a fresh machine, typed in a plain shell.

CI runs the README's two commands in the README's order (`.ci/run`: `make quickstart`, then
`make test` beside the head it left, then `make stop`). This module checks what that run does
not: a head and a deployment started the way the README starts them (`make deploy`, which
runs `make head` first) from an empty home folder, on private ports and in a Ray temp folder
of its own, so that a head the user left running on 8265/8000 is neither used nor stopped.
Then, in "new shells" (a bare environment: HOME, PATH=/usr/bin:/bin, and the variables that
stand in for the default ports), Ray's CLI after `source .venv/bin/activate`, `ray job
submit` exactly as the README writes it, training beside the running Serve application, the
dashboard's login as its page does it, the retrain cron line, and `make stop`, which must end
this head and everything it started and nothing else.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from stocktrend.cluster.head import haproxy_env
from stocktrend.cluster.ports import HeadPorts, free_ports

pytestmark = [pytest.mark.ray, pytest.mark.slow]
MARKER = "STOCKTREND_TEST_HEAD"


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries our marker: everything the test's head started."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"{MARKER}={marker}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def stop_marked(marker: str) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        for pid in marked_pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while marked_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.5)


class FreshMachine:
    def __init__(self, root: Path, repo: Path):
        self.repo = repo
        self.home = root / "home"
        self.home.mkdir()
        self.out = root / "out"
        # Short: Ray's unix socket paths live under it (108-byte limit).
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="fc", dir="/tmp"))
        self.marker = uuid.uuid4().hex
        self.ports = HeadPorts.free()
        self.serve_port = free_ports(1)[0]
        self.dashboard = f"http://127.0.0.1:{self.ports.dashboard}"

    def env(self, **extra: str) -> dict[str, str]:
        """A new shell: nothing exported but what a fresh login has, plus the stand-ins for
        the default ports (RAY_TMPDIR finds this head, as /tmp/ray finds the user's)."""
        return {"HOME": str(self.home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "RAY_TMPDIR": str(self.ray_tmp),
                "TMPDIR": str(self.ray_tmp), MARKER: self.marker, **self.ports.env(),
                **haproxy_env(self.ray_tmp / "hap"), **extra}

    def shell(self, line: str, timeout: float, activate: bool = False, **extra: str) -> subprocess.CompletedProcess:
        script = f"source .venv/bin/activate && {line}" if activate else line
        return subprocess.run(["bash", "-c", script], cwd=self.repo, env=self.env(**extra), capture_output=True,
                              text=True, timeout=timeout)

    def head_args(self) -> str:
        return " ".join(self.ports.start_args())  # --dashboard-port repeats DASHBOARD_PORT's value

    def stop(self) -> None:
        stop_marked(self.marker)
        subprocess.run(["rm", "-rf", str(self.ray_tmp)], check=False)


@pytest.fixture(scope="module")
def machine(ray_head, repo_root, tmp_path_factory, two_versions):
    ray_head.down()  # the session's head steps aside: this module's head is the one under test
    m = FreshMachine(tmp_path_factory.mktemp("fresh"), repo_root)
    # A model the way the quickstart leaves one (models/<name>/<version>, `latest`): the
    # quickstart's search itself runs in CI, and `ray job submit` below runs the smoke search.
    shutil.copytree(two_versions[1].parent, m.out / "models" / "msft_small",
                    ignore=shutil.ignore_patterns("predictions"))
    m.deployed = m.shell(f"make deploy MODEL={m.out}/models/msft_small DASHBOARD_PORT={m.ports.dashboard} "
                         f"SERVE_PORT={m.serve_port} HEAD_ARGS='{m.head_args()}'", timeout=300)
    yield m
    m.stop()


@pytest.mark.timeout(120)
def test_a_head_and_a_deployment_from_an_empty_home(machine):
    out = machine.deployed.stdout + machine.deployed.stderr
    assert machine.deployed.returncode == 0, out[-5000:]
    token = machine.home / ".ray" / "auth_token"
    assert token.is_file() and stat.S_IMODE(token.stat().st_mode) == 0o600  # created by the project, private
    assert "created the Ray authentication token" in out
    assert "prediction for the 5 trading days after" in out and "curl -s -X POST" in out
    assert f"Ray dashboard: {machine.dashboard}" in out and "ray get-auth-token" in out
    with urllib.request.urlopen(f"http://127.0.0.1:{machine.serve_port}/healthz", timeout=10) as resp:
        assert json.loads(resp.read())["status"] == "ok"


@pytest.mark.timeout(120)
def test_ray_cli_works_in_a_new_shell_after_activate(machine):
    status = machine.shell("ray status", 60, activate=True)
    assert status.returncode == 0 and "Active:" in status.stdout, status.stderr[-2000:]
    serve = machine.shell("serve status", 60, activate=True, RAY_DASHBOARD_ADDRESS=machine.dashboard)
    assert serve.returncode == 0 and "stocktrend" in serve.stdout and "RUNNING" in serve.stdout, serve.stderr[-2000:]


@pytest.mark.timeout(420)
def test_ray_job_submit_exactly_as_the_readme_writes_it(machine, repo_root):
    before = {p for p in (repo_root / "models" / "msft_smoke").glob("*")} | set((repo_root / "runs" / "tune").glob("smoke-*"))
    try:
        job = machine.shell("ray job submit -- python ray_jobs/tune.py --space search_spaces/smoke.yaml", 400,
                            activate=True)
        out = job.stdout + job.stderr
        assert job.returncode == 0 and "succeeded" in out, out[-5000:]
        assert "2 trials (0 failed)" in out and "model artifact:" in out
    finally:  # what the job wrote into the checkout, as a user's job would
        after = {p for p in (repo_root / "models" / "msft_smoke").glob("*")} | set((repo_root / "runs" / "tune").glob("smoke-*"))
        for path in after - before:
            subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.mark.timeout(240)
def test_training_beside_the_deployment_fits_or_fails_within_30_s(machine):
    common = f"--models {machine.out}/models --storage-path {machine.out}/runs"
    t0 = time.monotonic()
    ask_all = machine.shell(f".venv/bin/python ray_jobs/train.py --preset tiny --epochs 1 {common} "
                            f"--cpus-per-worker {os.cpu_count()}", 60)
    failed_after = time.monotonic() - t0
    err = ask_all.stderr
    assert ask_all.returncode == 2, (ask_all.stdout + err)[-3000:]
    assert failed_after < 30
    assert f"asks for 1 worker x {os.cpu_count()} CPU" in err and f"of {os.cpu_count()} CPU free" in err
    assert "Serve application 'stocktrend'" in err  # who holds the rest
    assert "--cpus-per-worker" in err and "serve shutdown" in err and "make stop" in err  # what to do
    fits = machine.shell(f".venv/bin/python ray_jobs/train.py --preset tiny --epochs 1 {common}", 180)
    assert fits.returncode == 0, (fits.stdout + fits.stderr)[-3000:]
    assert "model artifact:" in fits.stdout


@pytest.mark.timeout(60)
def test_dashboard_asks_for_the_token_and_its_login_shows_the_jobs_and_serve(machine):
    with urllib.request.urlopen(f"{machine.dashboard}/", timeout=10) as page:  # the page loads, then asks
        assert page.status == 200 and b"Ray Dashboard" in page.read()
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{machine.dashboard}/api/jobs/", timeout=10)
    assert denied.value.code == 401
    printed = machine.shell(".venv/bin/ray get-auth-token", 30)  # the one-line command the head prints
    token = printed.stdout.strip()
    assert printed.returncode == 0 and token == (machine.home / ".ray" / "auth_token").read_text().strip()
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = urllib.request.Request(f"{machine.dashboard}/api/authenticate", method="POST",
                                   headers={"Authorization": f"Bearer {token}"})
    assert json.loads(browser.open(login, timeout=10).read())["status"] == "authenticated"
    assert any(c.name == "ray-authentication-token" for c in jar)
    jobs = json.loads(browser.open(f"{machine.dashboard}/api/jobs/", timeout=10).read())
    assert any("ray_jobs/tune.py --space search_spaces/smoke.yaml" in (j.get("entrypoint") or "") for j in jobs)
    apps = json.loads(browser.open(f"{machine.dashboard}/api/serve/applications/", timeout=10).read())
    assert apps["applications"]["stocktrend"]["status"] == "RUNNING"
    assert apps["http_options"]["host"] == "127.0.0.1"  # deploy.py's default: loopback only


@pytest.mark.timeout(420)
def test_the_retrain_cron_line_runs_as_a_job_beside_the_deployment(machine):
    """README's cron line, as a new shell runs it: a real retrain of the deployed model, whose
    decision (either way) is logged with both versions' scores on the comparison block."""
    folder = machine.out / "models" / "msft_small"
    job = machine.shell(f"ray job submit -- python ray_jobs/retrain.py --model {folder} --epochs 1 --observe 0s "
                        f"--min-outcomes 0 --wait --bootstrap 200 --storage-path {machine.out}/runs/retrain", 400, activate=True)
    out = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in out, out[-5000:]
    history = [json.loads(line) for line in (folder / "promotions.jsonl").read_text().splitlines()]
    (decided,) = [h for h in history if h.get("action") == "retrain"]
    assert decided["decision"] in ("refused", "challenger"), decided
    assert decided["block"]["days"] >= 100 and decided["block"]["end"].startswith("2017-")
    for side in ("champion", "challenger"):
        assert decided["scores"][side]["cross_entropy"]["point"] > 0
    if decided["decision"] == "challenger":  # shadow, then (no outcomes asked for) promoted at once
        assert history[-1]["action"] == "observation" and history[-1]["decision"] in ("promoted", "dropped")
    else:
        assert "kept champion" in out


def other_heads(marker: str) -> dict[int, str]:
    """GCS servers and raylets of this machine that are not this module's (the user's head, CI's)."""
    from stocktrend.cluster import processes

    mine = set(marked_pids(marker))
    return {p.pid: p.text for p in processes.snapshot().values()
            if Path(p.argv[0]).name in ("gcs_server", "raylet") and p.pid not in mine}


@pytest.mark.timeout(120)
def test_make_stop_ends_this_head_and_all_it_started_and_nothing_else(machine):
    """Last in the module: the README's `make stop`, for this head's ports."""
    from stocktrend.cluster.ports import port_taken

    others = other_heads(machine.marker)
    assert marked_pids(machine.marker)  # the head, its workers, the replicas, HAProxy
    out = machine.shell(f"make stop HEAD_ARGS='{machine.head_args()}'", 100)
    assert out.returncode == 0 and f"stopped the Ray head on port {machine.ports.gcs}" in out.stdout, out.stderr
    assert marked_pids(machine.marker) == []  # workers, job drivers and HAProxy included
    assert not port_taken(machine.serve_port) and not port_taken(machine.ports.haproxy_metrics)
    assert {pid: text for pid, text in other_heads(machine.marker).items() if pid in others} == others


def test_a_taken_port_is_named_with_what_to_do(tmp_path, repo_root):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-m", "stocktrend.cluster", "up",
                              "--port", str(port), "--dashboard-port", str(free_ports(1)[0])],
                             cwd=repo_root, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"port {port} (Ray GCS) is already in use by pid {os.getpid()}" in out.stderr
    assert "--port" in out.stderr
