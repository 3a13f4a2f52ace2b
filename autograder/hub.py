"""The course on JupyterHub: students fetch and submit through nbgrader's exchange.

``write_hub(root)`` lays out a hub folder (default ``build/hub/``, see ``docs/hub.md``)::

    jupyterhub_config.py     the hub: loopback ports, authenticator, spawner, limits, services
    secrets/                 0700: the shared lab password, the kit's API token, cookie secret
    state/                   the hub's database and the proxy's and hub's logs
    etc/common/              nbgrader_config.py every single-user server reads (the exchange)
    etc/student/             student_id = the hub user; formgrader hidden from students
    etc/instructor/          the instructor's course directory
    exchange/                nbgrader's exchange: world-writable, sticky (0o1777)
    home/<user>/             each user's home (the lab spawner) and notebook folder
    home/<instructor>/attnkit/   the course directory (course_id ``attnkit``)

``start_hub`` runs JupyterHub on it; single-user servers get their role's config folders on
``JUPYTER_CONFIG_PATH``, so the Assignments tab fetches and submits through ``exchange/``.
The instructor's steps are in ``exchange.py`` (``release_assignment``, ``collect``,
``release_feedback``); ``attnkit grade`` grades ``<course>/submitted`` in between.

Spawners: ``LabSpawner`` (JupyterHub's ``SimpleLocalProcessSpawner``: every hub user runs as
the hub's own Unix user, home under ``home/``; a lab or test machine) and
``LimitedLocalProcessSpawner`` (``LocalProcessSpawner``: one real Unix user per hub user, for a
shared machine with PAM). Both apply per-server limits in the child before it starts: address
space (``RLIMIT_AS``), processes (``RLIMIT_NPROC``, per Unix user: it binds only with real users
who are not root) and CPU niceness. ``Spawner.mem_limit`` / ``cpu_limit`` are set to the same
figures but only container and systemd spawners enforce them.

nbgrader's notes on the exchange: https://nbgrader.readthedocs.io/en/stable/configuration/jupyterhub_config.html
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import COURSE_ID
from .exchange import EXCHANGE_MODE, make_exchange  # noqa: F401 (EXCHANGE_MODE: hub's API too)

GiB = 2**30
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- spawners with limits

@functools.cache
def _spawners() -> dict[str, type]:
    """The spawner classes, made on first use: importing JupyterHub takes most of a second, and
    ``attnkit --help`` should not pay it (``autograder.hub.LabSpawner`` still resolves, through
    the module's ``__getattr__``)."""
    from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner
    from traitlets import Integer, List, Unicode
    from traitlets.config import LoggingConfigurable

    class _Limits(LoggingConfigurable):
        """Per-server limits applied in the child process before the single-user server starts."""

        memory = Integer(8 * GiB, config=True, help="address space of each process (RLIMIT_AS), bytes; 0: none")
        processes = Integer(512, config=True,
                            help="processes and threads of the Unix user (RLIMIT_NPROC); 0: none. "
                                 "Counted per Unix user, ignored for root")
        niceness = Integer(5, config=True, help="CPU niceness added to each server (hub and proxy stay responsive)")
        instructors = List(Unicode(), config=True, help="hub users who get etc/instructor/ instead of etc/student/")
        config_root = Unicode("", config=True, help="the hub folder's etc/: per-role Jupyter config folders")

        def make_preexec_fn(self, name):
            inner = super().make_preexec_fn(name)  # the real-user spawner drops privileges here
            memory, processes, niceness = self.memory, self.processes, self.niceness

            def preexec():
                if memory:
                    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
                if processes:
                    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
                if niceness:
                    os.nice(niceness)
                inner()

            return preexec

        def get_env(self):
            env = super().get_env()
            if self.config_root:
                role = "instructor" if self.user.name in self.instructors else "student"
                env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
                    str(Path(self.config_root) / part) for part in (role, "common"))
            return env

    class LabSpawner(_Limits, SimpleLocalProcessSpawner):
        """Every hub user as the hub's Unix user, home ``home_dir_template``: a lab or test machine."""

    class LimitedLocalProcessSpawner(_Limits, LocalProcessSpawner):
        """One real Unix user per hub user (PAM): a shared machine."""

    for cls in (LabSpawner, LimitedLocalProcessSpawner):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return {cls.__name__: cls for cls in (LabSpawner, LimitedLocalProcessSpawner)}


def __getattr__(name: str):
    if name in ("LabSpawner", "LimitedLocalProcessSpawner"):
        return _spawners()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------- the hub folder

@dataclass
class Hub:
    """A hub folder and the settings written into it."""

    root: Path
    port: int = 8000
    hub_port: int = 8081
    proxy_api_port: int = 8001
    students: list[str] = field(default_factory=lambda: ["alice", "bob"])
    instructors: list[str] = field(default_factory=lambda: ["instructor"])
    course_id: str = COURSE_ID
    auth: str = "shared"   # shared: one lab password (SharedPasswordAuthenticator); pam: Unix accounts
    spawner: str = "lab"   # lab: LabSpawner; local: LimitedLocalProcessSpawner (real Unix users)
    memory: int = 8 * GiB
    processes: int = 512
    niceness: int = 5
    active_server_limit: int = 0  # 0: from the machine's memory
    cull_idle: int = 3600  # seconds; 0: no idle culler

    def __post_init__(self):
        self.root = Path(self.root).resolve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def exchange(self) -> Path:
        return self.root / "exchange"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def config_file(self) -> Path:
        return self.root / "jupyterhub_config.py"

    def home(self, user: str) -> Path:
        return self.root / "home" / user

    @property
    def course_root(self) -> Path:
        return self.home(self.instructors[0]) / self.course_id

    @property
    def api_token(self) -> str:
        return (self.secrets / "api_token").read_text().strip()

    @property
    def password(self) -> str:
        return (self.secrets / "password").read_text().strip()


def find_proxy() -> str | None:
    """``configurable-http-proxy``: the one ``make`` installed into the venv (``.venv/node``),
    else one on ``PATH`` (npm -g, Debian's ``node-configurable-http-proxy``), else None."""
    local = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
    return str(local) if local.exists() else shutil.which("configurable-http-proxy")


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _secret(path: Path, make) -> str:
    if not path.exists():
        path.write_text(make() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def default_server_limit() -> int:
    """Servers running at once: one per 2 GiB of the machine's memory (a course notebook with
    torch uses about 1 GiB resident; the address-space limit counts far more), at least 2."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(2, total // (2 * GiB))


_HUB_CONFIG = '''\
"""JupyterHub for the attnkit course, written by autograder/hub.py (docs/hub.md).

Regenerated by `make hub` / `python -m autograder.hub write`: change the options there, or copy
this file for a deployment (HTTPS, real authentication, a container or systemd spawner).
"""
from pathlib import Path

c = get_config()  # noqa: F821
HUB = Path({root!r})
SECRETS = HUB / "secrets"

# Loopback only: the proxy (users' URL), its API, the hub's own port.
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port!r}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.pid_file = str(HUB / "state" / "proxy.pid")
c.JupyterHub.db_url = "sqlite:///" + str(HUB / "state" / "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = str(SECRETS / "cookie_secret")
c.JupyterHub.pid_file = str(HUB / "state" / "jupyterhub.pid")

# Who may log in.
c.Authenticator.allowed_users = set({users!r})
{auth}
# The course's groups, named as nbgrader's JupyterHub integration expects.
c.JupyterHub.load_groups = {{
    "formgrade-{course_id}": {{"users": {instructors!r}}},
    "nbgrader-{course_id}": {{"users": {students!r}}},
}}

# Single-user servers: JupyterLab with nbgrader's extensions, from this venv.
c.JupyterHub.spawner_class = {spawner_class!r}
{home}c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = {args!r}
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 60   # seconds for a server to start
c.Spawner.http_timeout = 60    # seconds for it to answer once started
# Per-role Jupyter config (JUPYTER_CONFIG_PATH): etc/common (the exchange) and etc/student or
# etc/instructor; instructors are listed on the spawner.
{spawner_name}.config_root = str(HUB / "etc")
{spawner_name}.instructors = {instructors!r}

# Limits so that one notebook does not starve the others. Applied by the spawner in the child:
{spawner_name}.memory = {memory!r}  # RLIMIT_AS of each process, bytes
{spawner_name}.processes = {processes!r}  # RLIMIT_NPROC per Unix user (not root, not LabSpawner users)
{spawner_name}.niceness = {niceness!r}
# Enforced only by container / systemd spawners (here: shown to the user as MEM_LIMIT, CPU_LIMIT):
c.Spawner.mem_limit = {memory!r}
c.Spawner.cpu_limit = 1.0
c.JupyterHub.active_server_limit = {active_server_limit!r}  # servers running at once

# The kit's API token (secrets/api_token): start servers and make user tokens (autograder/hub.py).
c.JupyterHub.services = [
    {{"name": "attnkit", "api_token": (SECRETS / "api_token").read_text().strip()}},
{culler_service}]
c.JupyterHub.load_roles = [
    {{"name": "attnkit", "services": ["attnkit"],
     "scopes": ["admin:users", "admin:servers", "admin:server_state", "tokens", "access:servers",
                "list:users", "read:users"]}},
{culler_role}]
'''

_COMMON_NBGRADER = '''\
"""nbgrader settings every single-user server of the hub reads (autograder/hub.py)."""
c = get_config()  # noqa: F821
c.Exchange.root = {exchange!r}
c.CourseDirectory.course_id = {course_id!r}
'''

_STUDENT_NBGRADER = '''\
"""A student's server: submissions carry the hub user's name.

nbgrader names a submission after the Unix user; with LabSpawner every hub user is the hub's
Unix user, so the name comes from JupyterHub instead (the same name with real Unix users).
"""
import os

c = get_config()  # noqa: F821
c.CourseDirectory.student_id = os.environ["JUPYTERHUB_USER"]
'''

_INSTRUCTOR_NBGRADER = '''\
"""The instructor's server: formgrader and the nbgrader commands work on the course directory."""
c = get_config()  # noqa: F821
c.CourseDirectory.root = {course!r}
'''

# Students see the Assignments tab only: no formgrader, no "create assignment" toolbar.
_STUDENT_SERVER = {"ServerApp": {"jpserver_extensions": {
    "nbgrader.server_extensions.formgrader": False}}}
_STUDENT_LAB = {"disabledExtensions": {
    "@jupyter/nbgrader:formgrader": True, "@jupyter/nbgrader:create-assignment": True}}


def write_hub(hub: Hub) -> Path:
    """Write the hub folder (config, secrets, exchange, homes, per-role Jupyter config); return
    ``jupyterhub_config.py``. Existing secrets and homes are kept."""
    proxy = find_proxy()
    if proxy is None:
        raise RuntimeError("configurable-http-proxy not found: run `make venv` (it installs it "
                           "with npm into .venv/node) or `npm install -g configurable-http-proxy`")
    root = hub.root
    for folder in ("state", "home"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    hub.secrets.mkdir(parents=True, exist_ok=True)
    hub.secrets.chmod(0o700)
    _secret(hub.secrets / "api_token", lambda: secrets.token_hex(32))
    _secret(hub.secrets / "password", lambda: secrets.token_urlsafe(12))
    make_exchange(hub.exchange)

    etc = hub.etc
    for role in ("common", "student", "instructor"):
        (etc / role).mkdir(parents=True, exist_ok=True)
    (etc / "common" / "nbgrader_config.py").write_text(
        _COMMON_NBGRADER.format(exchange=str(hub.exchange), course_id=hub.course_id))
    (etc / "student" / "nbgrader_config.py").write_text(_STUDENT_NBGRADER)
    (etc / "student" / "jupyter_server_config.json").write_text(json.dumps(_STUDENT_SERVER, indent=2))
    (etc / "student" / "labconfig").mkdir(exist_ok=True)
    (etc / "student" / "labconfig" / "page_config.json").write_text(json.dumps(_STUDENT_LAB, indent=2))
    (etc / "instructor" / "nbgrader_config.py").write_text(
        _INSTRUCTOR_NBGRADER.format(course=str(hub.course_root)))
    for user in hub.students + hub.instructors:
        hub.home(user).mkdir(parents=True, exist_ok=True)
    hub.course_root.mkdir(parents=True, exist_ok=True)

    lab = hub.spawner == "lab"
    spawner_class = f"autograder.hub.{'LabSpawner' if lab else 'LimitedLocalProcessSpawner'}"
    spawner_name = f"c.{spawner_class.rsplit('.', 1)[1]}"
    if hub.auth == "shared":
        auth = ('c.JupyterHub.authenticator_class = "shared-password"  # one lab password: '
                'secrets/password\nc.SharedPasswordAuthenticator.user_password = '
                '(SECRETS / "password").read_text().strip()\n')
    else:
        auth = 'c.JupyterHub.authenticator_class = "pam"  # the machine\'s Unix accounts\n'
    culler_service = culler_role = ""
    if hub.cull_idle:
        culler_service = (f'    {{"name": "idle-culler", "command": [{sys.executable!r}, "-m", '
                          f'"jupyterhub_idle_culler", "--timeout={hub.cull_idle}"]}},\n')
        culler_role = ('    {"name": "idle-culler", "services": ["idle-culler"],\n'
                       '     "scopes": ["list:users", "read:users:activity", "read:servers", '
                       '"delete:servers"]},\n')
    bin_dir = Path(sys.executable).parent
    text = _HUB_CONFIG.format(
        root=str(root), port=hub.port, hub_port=hub.hub_port, proxy_api_port=hub.proxy_api_port,
        proxy=proxy, users=sorted(hub.students + hub.instructors), auth=auth,
        course_id=hub.course_id, instructors=hub.instructors, students=hub.students,
        spawner_class=spawner_class, spawner_name=spawner_name,
        home=(f'{spawner_name}.home_dir_template = str(HUB / "home" / "{{username}}")\n' if lab else ""),
        singleuser=str(bin_dir / "jupyterhub-singleuser"),
        args=["--allow-root"] if lab and os.geteuid() == 0 else [],
        memory=hub.memory, processes=hub.processes, niceness=hub.niceness,
        active_server_limit=hub.active_server_limit or default_server_limit(),
        culler_service=culler_service, culler_role=culler_role)
    hub.config_file.write_text(text)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(hub).items()}
    (root / "hub.json").write_text(json.dumps(settings, indent=2) + "\n")
    return hub.config_file


def load_hub(root: Path) -> Hub:
    """The hub written at ``root`` (its ``hub.json``), for the instructor's steps."""
    return Hub(**json.loads((Path(root) / "hub.json").read_text()))


# ---------------------------------------------------------------- running it

def start_hub(hub: Hub, *, wait: float = 60) -> subprocess.Popen:
    """Start JupyterHub on ``hub`` (written with ``write_hub``); with ``wait``, return once its
    API answers (``wait_for_hub``), else at once.

    The hub runs in a session of its own (``stop_hub`` ends it and what it started); its log
    is ``state/jupyterhub.log``.
    """
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                  os.environ.get("PATH", "")])}
    with open(hub.root / "state" / "jupyterhub.log", "ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyterhub"), "-f", str(hub.config_file)],
                                cwd=hub.root / "state", stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    if wait:
        wait_for_hub(hub, proc, wait)
    return proc


def wait_for_hub(hub: Hub, proc: subprocess.Popen, wait: float = 60) -> None:
    """Return once the hub's API answers through the proxy; stop it and raise if it does not."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterHub exited with {proc.returncode}:\n{log_tail(hub)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{hub.url}/hub/api/", timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.1)
    stop_hub(proc)
    raise RuntimeError(f"JupyterHub did not answer within {wait:.0f} s:\n{log_tail(hub)}")


def stop_hub(proc: subprocess.Popen, *, wait: float = 20) -> None:
    """Stop the hub (it stops the users' servers and the proxy); kill its session if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def log_tail(hub: Hub, n: int = 4000) -> str:
    path = hub.root / "state" / "jupyterhub.log"
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


class HubAPI:
    """JupyterHub's REST API and the users' servers, with a token (the kit's by default)."""

    def __init__(self, hub: Hub, token: str | None = None):
        self.hub, self.token = hub, token or hub.api_token

    def request(self, method: str, path: str, body: dict | None = None, *, form: dict | None = None,
                token: str | None = None, timeout: float = 60):
        """``path`` under the hub's URL; a JSON ``body`` or a ``form``; the answer, JSON-decoded."""
        data, headers = None, {"Authorization": f"token {token or self.token}"}
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(self.hub.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:2000]}") from None
        return json.loads(text) if text.strip() else None

    def user_token(self, user: str, note: str = "attnkit") -> str:
        """A new API token for ``user`` (it can use that user's server)."""
        return self.request("POST", f"/hub/api/users/{user}/tokens",
                            {"note": note, "expires_in": 3600})["token"]

    def start_servers(self, users: list[str], *, wait: float = 90) -> None:
        """Start each user's server, all at once, and wait until every one is ready."""
        with ThreadPoolExecutor(len(users)) as pool:  # a start request waits for the server a while
            list(pool.map(lambda user: self.request("POST", f"/hub/api/users/{user}/server", {}), users))
        deadline, waiting = time.monotonic() + wait, set(users)
        while waiting and time.monotonic() < deadline:
            for user in sorted(waiting):
                if self.server(user).get("ready"):
                    waiting.discard(user)
            if waiting:
                time.sleep(0.2)
        if waiting:
            raise RuntimeError(f"servers not ready after {wait:.0f} s: {sorted(waiting)}\n{log_tail(self.hub)}")

    def server(self, user: str) -> dict:
        """The user's default server as the hub describes it ({} when none)."""
        return self.request("GET", f"/hub/api/users/{user}")["servers"].get("", {})


class Student:
    """What the Assignments tab does, through one student's server (nbgrader's assignment_list)."""

    def __init__(self, api: HubAPI, user: str, token: str):
        self.api, self.user, self.token = api, user, token

    def _post(self, action: str, course_id: str, assignment: str):
        return self.api.request("POST", f"/user/{self.user}/assignments/{action}", token=self.token,
                                form={"course_id": course_id, "assignment_id": assignment})

    def list(self, course_id: str):
        return self.api.request("GET", f"/user/{self.user}/assignments?course_id={course_id}",
                                token=self.token)

    def fetch(self, course_id: str, assignment: str):
        return self._post("fetch", course_id, assignment)

    def submit(self, course_id: str, assignment: str):
        return self._post("submit", course_id, assignment)

    def fetch_feedback(self, course_id: str, assignment: str):
        return self._post("fetch_feedback", course_id, assignment)


# ---------------------------------------------------------------- command line

def _hub_from(args) -> Hub:
    return Hub(Path(args.dir), port=args.port, hub_port=args.port + 81, proxy_api_port=args.port + 1,
               students=args.students.split(","), instructors=args.instructors.split(","),
               auth=args.auth, spawner=args.spawner, memory=int(args.memory * GiB),
               processes=args.processes, active_server_limit=args.max_servers, cull_idle=args.cull_idle)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``attnkit hub``'s arguments (also ``python -m autograder.hub``)."""
    parser.add_argument("action", choices=["start", "write", "release", "collect", "feedback"],
                        help="start: write the hub folder and run JupyterHub (Ctrl-C stops it); "
                             "write: the folder only; release A [--due]: into the exchange; "
                             "collect A; feedback A --run DIR: release attnkit grade's feedback")
    parser.add_argument("assignment", nargs="?")
    parser.add_argument("--dir", default="build/hub",
                        help="the hub folder (default build/hub); release, collect and feedback read "
                             "the settings start/write saved in its hub.json")
    parser.add_argument("--port", type=int, default=8000,
                        help="the hub's URL port on 127.0.0.1 (its API: +1, the hub itself: +81)")
    parser.add_argument("--students", default="alice,bob", help="comma-separated hub users")
    parser.add_argument("--instructors", default="instructor", help="comma-separated; the first owns the course")
    parser.add_argument("--auth", choices=["shared", "pam"], default="shared",
                        help="shared: one password for the lab (secrets/password); pam: Unix accounts")
    parser.add_argument("--spawner", choices=["lab", "local"], default="lab",
                        help="lab: all users as this Unix user; local: real Unix users (with --auth pam)")
    parser.add_argument("--memory", type=float, default=8, metavar="GIB", help="address space per process")
    parser.add_argument("--processes", type=int, default=512, help="processes per Unix user (local spawner)")
    parser.add_argument("--max-servers", type=int, default=0, metavar="N",
                        help="servers running at once (default: one per 2 GiB of memory)")
    parser.add_argument("--cull-idle", type=int, default=3600, metavar="S",
                        help="stop servers idle this long (0: never)")
    parser.add_argument("--due", help="release: the due date (ISO 8601, UTC unless a zone is given)")
    parser.add_argument("--run", help="feedback: the attnkit grade output folder")


def run(args) -> int:
    from .exchange import collect, release_assignment, release_feedback

    written = Path(args.dir) / "hub.json"
    hub = load_hub(args.dir) if args.action not in ("start", "write") and written.exists() else _hub_from(args)
    if args.action in ("start", "write"):
        write_hub(hub)
        print(f"wrote {hub.config_file}")
        if args.action == "write":
            return 0
        who = ", ".join(hub.students + hub.instructors)
        login = (f"password {hub.password} (secrets/password)" if hub.auth == "shared" else "Unix passwords")
        print(f"JupyterHub on {hub.url}/ : users {who}; {login}; the course: {hub.course_root}; "
              f"formgrader in a tab of its own: {hub.url}/user/{hub.instructors[0]}/formgrader/")
        os.chdir(hub.root / "state")
        os.execv(str(Path(sys.executable).parent / "jupyterhub"), ["jupyterhub", "-f", str(hub.config_file)])
    if not args.assignment:
        print(f"attnkit hub {args.action}: which assignment?")
        return 2
    if args.action == "release":
        course = release_assignment(hub, args.assignment, due=args.due)
        print(f"released {args.assignment} into {hub.exchange} (course {course})")
    elif args.action == "collect":
        print(f"collected into {collect(hub.course_root, args.assignment)}; next: attnkit grade "
              f"{args.assignment} {hub.course_root / 'submitted'} --out DIR")
    elif args.action == "feedback":
        if not args.run:
            print("attnkit hub feedback: --run DIR (the attnkit grade output) is needed")
            return 2
        students = release_feedback(Path(args.run), hub.course_root, args.assignment)
        print(f"feedback released to {len(students)} students: {', '.join(students) or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.hub", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
