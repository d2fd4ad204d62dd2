"""A real local Ray cluster for the scale-out tests: a head node and a worker node (two raylets, each with
its own object store and worker pool), the Ray from the Ray venv (scripts/ray-venv.sh).

    with RayCluster(venv) as cluster:
        cluster.serve_run(config_path)      # serve run --non-blocking, the rendered app config
        cluster.head_ip                     # where the app's HTTP port is (0.0.0.0 in the config)
        cluster.replicas()                  # [(actor_id, pid, state, node_id), ...] of the LLM deployment

Where network namespaces can be made (root), the head and the worker each run in their own namespace
(two hosts with their own addresses and loopbacks, joined by a bridge); else both on this host's
address. Settings seen needed with Ray 2.60.0 here (issue 13): --num-cpus well above the 2 cores (each
LLM replica reserves 2 logical CPUs, the ingress 1); an explicit RAY_ADDRESS and RAY_AUTH_MODE=disabled
so that a stray local instance cannot turn token auth on. (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps a
*single* node on 127.0.0.1, but then `ray start --address` refuses to add a worker node, and with it
on, Ray replaces 127.0.0.1 by the host's address.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.vllm_server import free_port

ROOT = Path(__file__).resolve().parents[2]

# The LLM deployment's replica actors and how many replicas Serve counts RUNNING (initialized: an actor
# is ALIVE while its engine still loads), as JSON (runs in the Ray venv).
_REPLICAS = """
import json, ray
from ray import serve
from ray._private.state import actors  # the GCS's actor table: the state API needs the dashboard
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
rows = [
    (a["ActorID"], a["Pid"], a["State"], a["Address"]["NodeID"])
    for a in actors().values()
    if a["ActorClassName"].startswith("ServeReplica:llm:") and "LLMServer" in a["ActorClassName"]
]
app = serve.status().applications.get("llm")
running = 0
if app is not None:
    running = sum(d.replica_states.get("RUNNING", 0) for n, d in app.deployments.items() if "LLMServer" in n)
print("KIT-RESULT " + json.dumps({"actors": rows, "running": running}))
"""


class RayCluster:
    def __init__(self, venv: Path, *, cpus_per_node: int = 4, worker_niceness: int | None = None) -> None:
        self.venv = Path(venv)
        self.cpus = cpus_per_node
        # Ray starts its workers (replicas, their vLLM engines) at nice 15 by default (its C++ config
        # worker_niceness): on a shared machine they then yield to every nice-0 process, a directly
        # started vLLM does not. scripts/ray_serve_overhead.py sets 0 to compare like with like.
        self.worker_niceness = worker_niceness
        self.port = free_port()
        # Ray's socket paths must stay short (AF_UNIX limit): a short temp dir of our own.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="kr", dir="/tmp"))
        self.hosts = TwoHosts.create()  # None where network namespaces are not available
        self.head_ip = self.hosts.ips[0] if self.hosts else None
        # Where this namespace reaches the head's HTTP proxy (the app config binds 0.0.0.0).
        self.client_host = self.hosts.client_ip if self.hosts else "127.0.0.1"
        self.address = f"{self.head_ip or '127.0.0.1'}:{self.port}"
        self.started = False

    @property
    def mode(self) -> str:
        if self.hosts:
            return f"two network namespaces {self.hosts.names} ({', '.join(self.hosts.ips)}), veth-linked"
        return "two raylets on this host's address (network namespaces unavailable)"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_", "RAY_"))}
        env.update(
            RAY_AUTH_MODE="disabled",
            RAY_ADDRESS=self.address,
            RAY_USAGE_STATS_ENABLED="0",
            KIT_RAY_CLUSTER=str(self.temp_dir),
            PYTHONUNBUFFERED="1",
            PATH=f"{self.venv / 'bin'}:{env.get('PATH', '')}",
        )
        if self.worker_niceness is not None:
            env["RAY_worker_niceness"] = str(self.worker_niceness)
        return env

    def _checked(self, *argv: str, host: int = 0, timeout: float = 240) -> str:
        cmd = list(argv)
        if self.hosts:
            cmd = ["ip", "netns", "exec", self.hosts.names[host], *cmd]
        result = subprocess.run(
            cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def start(self) -> RayCluster:
        ray = str(self.venv / "bin" / "ray")
        common = [f"--num-cpus={self.cpus}", "--disable-usage-stats"]
        self.started = True
        head_ip = [f"--node-ip-address={self.head_ip}"] if self.hosts else []
        self._checked(
            ray, "start", "--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
            "--include-dashboard=false", *head_ip, *common,
        )  # fmt: skip
        worker_ip = [f"--node-ip-address={self.hosts.ips[1]}"] if self.hosts else []
        self._checked(ray, "start", f"--address={self.address}", *worker_ip, *common, host=1)
        return self

    def python(self, code: str, timeout: float = 120) -> str:
        return self._checked(str(self.venv / "bin" / "python"), "-c", code, timeout=timeout)

    def nodes(self) -> list[str]:
        out = self.python(
            "import ray, json; ray.init(address='auto', logging_level='ERROR', log_to_driver=False); "
            "print('KIT-RESULT', json.dumps(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))"
        )
        return json.loads(_result(out))

    def serve_run(self, config: Path, timeout: float = 600) -> str:
        return self._checked(
            str(self.venv / "bin" / "serve"), "run", "--non-blocking", "-a", self.address, str(config),
            timeout=timeout,
        )  # fmt: skip

    def replicas(self) -> tuple[list[tuple[str, int, str, str]], int]:
        """([(actor_id, pid, state, node_id), ...] of the LLM replicas, how many Serve counts RUNNING)."""
        out = json.loads(_result(self.python(_REPLICAS, timeout=60)))
        return [tuple(r) for r in out["actors"]], int(out["running"])  # type: ignore[misc]

    def stop(self) -> None:
        if self.started:
            self.started = False
            # Not `ray stop`: it stops every Ray on the machine. Our processes (raylets, GCS, replicas and
            # the vLLM engines they spawn) all inherit KIT_RAY_CLUSTER from `ray start`; end those by PID.
            for sig in (15, 9):
                for pid in session_pids(self.temp_dir):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                time.sleep(3)
        if self.hosts:
            self.hosts.delete()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class TwoHosts:
    """Two network namespaces, two hosts with their own addresses and loopbacks: a veth pair joins them
    (``ips``), a second pair joins this namespace to the first (``client_ip``: where tests reach the head).
    Plain veth links, no bridge: Docker's FORWARD DROP policy would drop bridged traffic. Needs root."""

    names: tuple[str, str]
    ips: tuple[str, str]
    client_ip: str
    links: tuple[str, str]

    @classmethod
    def create(cls) -> TwoHosts | None:
        if os.geteuid() != 0 or os.environ.get("KIT_RAY_NO_NETNS") == "1":
            return None
        tag = f"{os.getpid() % 100000}"
        net = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
        a, b = f"kitray{tag}a", f"kitray{tag}b"
        hosts = cls((a, b), (f"{net}.2", f"{net}.3"), f"{net}.66", (f"kab{tag}", f"kra{tag}"))
        inside = ["ip", "netns", "exec"]
        steps = [
            ["ip", "netns", "add", a],
            ["ip", "netns", "add", b],
            # host a <-> host b
            [
                "ip",
                "link",
                "add",
                f"kab{tag}",
                "netns",
                a,
                "type",
                "veth",
                "peer",
                "name",
                f"kba{tag}",
                "netns",
                b,
            ],
            [*inside, a, "ip", "addr", "add", f"{net}.2/26", "dev", f"kab{tag}"],
            [*inside, b, "ip", "addr", "add", f"{net}.3/26", "dev", f"kba{tag}"],
            # this namespace <-> host a
            ["ip", "link", "add", f"kra{tag}", "type", "veth", "peer", "name", f"kar{tag}", "netns", a],
            ["ip", "addr", "add", f"{net}.65/26", "dev", f"kra{tag}"],
            [*inside, a, "ip", "addr", "add", f"{net}.66/26", "dev", f"kar{tag}"],
            ["ip", "link", "set", f"kra{tag}", "up"],
        ]
        for ns, links in ((a, (f"kab{tag}", f"kar{tag}", "lo")), (b, (f"kba{tag}", "lo"))):
            steps += [[*inside, ns, "ip", "link", "set", link, "up"] for link in links]
        for step in steps:
            if subprocess.run(step, capture_output=True, check=False).returncode != 0:
                hosts.delete()
                return None
        return hosts

    def delete(self) -> None:
        # Deleting a namespace deletes the veth ends in it, and with them their peers.
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.links[1]], capture_output=True, check=False)


def _result(stdout: str) -> str:
    """The helper script's answer line (Ray may print more around it)."""
    return next(line for line in reversed(stdout.splitlines()) if line.startswith("KIT-RESULT "))[11:]


def session_pids(temp_dir: Path) -> list[int]:
    """PIDs of the processes carrying this cluster's KIT_RAY_CLUSTER: never another engineer's Ray."""
    pids = []
    marker = f"KIT_RAY_CLUSTER={temp_dir}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            pids.append(int(proc.name))
    return pids
