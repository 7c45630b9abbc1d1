"""The demo catalog: each demo's manifests and `steps.yaml` (files to apply, expected connectivity).

Owns the `steps.yaml` format and its checks:

    demo: stars                      # the directory name
    title: ...; source: <docs URL>
    ui: UI                           # optional: the endpoint running kaliko/management-ui
    endpoints: {F: {pod: stars/frontend, port: 80, protocol: TCP}, ...}
    steps:
      - name: default-deny
        apply: [default-deny.yaml]   # files in this directory, applied in order
        expect: [{from: UI, to: F, allowed: false}, ...]   # probed on the `to` endpoint's port

and what a runner needs from it: the YAML documents of a step (`documents`), the probes to run
after it (`expected_probes`) and, for demos with a UI, the graph the UI should then show
(`expected_ui_graph`, in the shape of the UI's /api/graph edges). It does not apply anything,
resolve pods to addresses or run probes (the lab and `kalikoctl lab` do).

Invariants: a demo loads whole or not at all; every error names the file and the field path;
every endpoint's pod is created by some step's Pod manifest, and every probed endpoint's
port/protocol is one of that pod's containerPorts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

DEMOS_DIR = Path(__file__).resolve().parent


class DemoError(ValueError):
    """A demo directory is malformed; the message names the file and the field path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Endpoint(_Strict):
    """A pod, and (for probe targets) the port and protocol to probe it on."""

    pod: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["TCP", "UDP"] = "TCP"


class Expectation(_Strict):
    """After a step, a connection from endpoint `from` to endpoint `to` is (or is not) allowed."""

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    allowed: bool


class Step(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    apply: list[str] = Field(min_length=1)
    expect: list[Expectation] = []


class Demo(_Strict):
    demo: str
    title: str
    source: str
    ui: str | None = None
    endpoints: dict[str, Endpoint]
    steps: list[Step] = Field(min_length=1)
    _directory: Path = PrivateAttr(default=DEMOS_DIR)

    @model_validator(mode="after")
    def _references_exist(self) -> Demo:
        if self.ui is not None and self.ui not in self.endpoints:
            raise ValueError(f"ui: unknown endpoint {self.ui!r}")
        names = [step.name for step in self.steps]
        for index, step in enumerate(self.steps):
            if step.name in names[:index]:
                raise ValueError(f"steps[{index}].name: {step.name!r} is used twice")
            for number, expectation in enumerate(step.expect):
                where = f"steps[{index}].expect[{number}]"
                for field, alias in (("from", expectation.source), ("to", expectation.target)):
                    if alias not in self.endpoints:
                        raise ValueError(f"{where}.{field}: unknown endpoint {alias!r}")
                if self.endpoints[expectation.target].port is None:
                    raise ValueError(f"{where}.to: endpoint {expectation.target!r} has no port to probe")
        return self

    @property
    def directory(self) -> Path:
        return self._directory

    def step(self, name: str) -> Step:
        """The step called `name` (KeyError if none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"demo {self.demo!r} has no step {name!r}")

    def documents(self, step: Step | str) -> list[dict[str, Any]]:
        """The YAML documents the step applies, file by file, in order."""
        found = self.step(step) if isinstance(step, str) else step
        return [doc for name in found.apply for doc in _read_documents(self._directory / name)]

    def expected_probes(self, step: Step | str) -> list[ExpectedProbe]:
        """The probes to run after `step`, each with the verdict the docs expect."""
        found = self.step(step) if isinstance(step, str) else step
        probes = []
        for expectation in found.expect:
            source, target = self.endpoints[expectation.source], self.endpoints[expectation.target]
            assert target.port is not None  # checked by the validator
            aliases = (expectation.source, expectation.target)
            probes.append(
                ExpectedProbe(
                    *aliases, source.pod, target.pod, target.port, target.protocol, expectation.allowed
                )
            )
        return probes

    def expected_ui_graph(self, step: Step | str) -> dict[str, Any]:
        """What the management UI should show after `step`: visible nodes and their edges.

        A service is visible when the UI may reach it; edges are the expectations between two
        visible services (not involving the UI), as `{"from", "to", "reachable"}`.
        """
        if self.ui is None:
            raise ValueError(f"demo {self.demo!r} has no management UI")
        probes = self.expected_probes(step)
        visible = [p.target for p in probes if p.source == self.ui and p.allowed]
        edges = [
            {"from": p.source, "to": p.target, "reachable": p.allowed}
            for p in probes
            if p.source != self.ui and p.target != self.ui and p.source in visible and p.target in visible
        ]
        return {"visible": visible, "edges": edges}


@dataclass(frozen=True)
class ExpectedProbe:
    """One probe to run after a step: endpoint aliases, pods (`ns/name`), port, protocol, verdict."""

    source: str
    target: str
    source_pod: str
    target_pod: str
    port: int
    protocol: str
    allowed: bool


def _read_documents(path: Path) -> list[dict[str, Any]]:
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except (OSError, yaml.YAMLError) as error:
        raise DemoError(f"{path}: {error}") from None
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict) or "kind" not in doc:
            raise DemoError(f"{path}: document {index} is not a resource with a kind")
    return documents


def _error_path(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _pod_ports(demo: Demo) -> dict[str, set[tuple[int, str]]]:
    pods: dict[str, set[tuple[int, str]]] = {}
    for step in demo.steps:
        for doc in demo.documents(step):
            if doc.get("kind") != "Pod":
                continue
            meta = doc.get("metadata", {})
            containers = doc.get("spec", {}).get("containers", [])
            ports = {
                (int(port["containerPort"]), str(port.get("protocol", "TCP")))
                for container in containers
                for port in container.get("ports", [])
            }
            pods[f"{meta.get('namespace', 'default')}/{meta.get('name')}"] = ports
    return pods


def load_demo(name: str | Path) -> Demo:
    """Load `lab/demos/<name>/steps.yaml` (or a directory path) and check it against its manifests."""
    directory = Path(name) if isinstance(name, Path) or "/" in str(name) else DEMOS_DIR / name
    path = directory / "steps.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DemoError(f"{path}: {error}") from None
    try:
        demo = Demo.model_validate(raw)
    except ValidationError as error:
        problems = [f"{_error_path(e['loc']) or '(document)'}: {e['msg']}" for e in error.errors()]
        raise DemoError(f"{path}: " + "; ".join(problems)) from None
    demo._directory = directory
    for index, step in enumerate(demo.steps):
        for number, file in enumerate(step.apply):
            if not (directory / file).is_file():
                raise DemoError(f"{path}: steps[{index}].apply[{number}]: no file {file!r} in {directory}")
    pods = _pod_ports(demo)
    for alias, endpoint in demo.endpoints.items():
        if endpoint.pod not in pods:
            raise DemoError(f"{path}: endpoints.{alias}.pod: no step creates pod {endpoint.pod!r}")
        if endpoint.port is not None and (endpoint.port, endpoint.protocol) not in pods[endpoint.pod]:
            served = ", ".join(f"{p}/{q}" for p, q in sorted(pods[endpoint.pod])) or "nothing"
            raise DemoError(
                f"{path}: endpoints.{alias}.port: pod {endpoint.pod} does not declare "
                f"{endpoint.port}/{endpoint.protocol} (it declares {served})"
            )
    return demo


def demo_names() -> list[str]:
    """The built-in demos: directories under lab/demos with a steps.yaml."""
    return sorted(p.parent.name for p in DEMOS_DIR.glob("*/steps.yaml"))
