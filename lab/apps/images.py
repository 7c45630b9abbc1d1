"""The built-in image table: which Python module a Pod's `spec.containers[0].image` runs.

Owns the image names (`kaliko/probe`, `kaliko/stars-probe`, `kaliko/management-ui`), the module each
one runs and the environment contract with the lab (`KALIKO_POD_NAME`). It does not start processes
or enter namespaces; `lab.topology` does, with the argv built here.

Invariant: `command()` is pure: the same image and args always give the same argv.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

POD_NAME_ENV = "KALIKO_POD_NAME"
"""The lab sets this to `<namespace>/<pod>`; the programs use it as their name in replies and status."""


@dataclass(frozen=True)
class Image:
    """One built-in image: its name in manifests, the module it runs, and what it serves."""

    name: str
    module: str
    summary: str
    serves_container_ports: bool = False
    """When true, `command()` passes the container's ports, each on TCP and UDP, as `--ports`
    unless `args` already does."""


IMAGES: Mapping[str, Image] = {
    image.name: image
    for image in (
        Image(
            "kaliko/probe",
            "lab.apps.probe",
            "serves every declared containerPort on TCP and UDP (like nginx for the policy demos)",
            serves_container_ports=True,
        ),
        Image(
            "kaliko/stars-probe",
            "lab.apps.stars_probe",
            "Calico's star-probe: GET /status on --http-port, polls each of --urls every --interval",
        ),
        Image(
            "kaliko/management-ui",
            "lab.apps.management_ui",
            "Calico's star-collect: polls the stars-probes and draws the Stars graph on --port",
        ),
    )
}


class UnknownImageError(ValueError):
    """A manifest names an image that is not built in."""

    def __init__(self, field: str, image: str) -> None:
        known = ", ".join(sorted(IMAGES))
        super().__init__(f"{field}: unknown image {image!r}; the built-in images are {known}")
        self.field = field
        self.image = image


def image_for(image: str, field: str = "spec.containers[0].image") -> Image:
    """Return the built-in image called `image`, or raise `UnknownImageError` naming `field`."""
    try:
        return IMAGES[image]
    except KeyError:
        raise UnknownImageError(field, image) from None


def command(
    image: str,
    args: Sequence[str] = (),
    ports: Sequence[tuple[int, str]] = (),
    python: str = sys.executable,
    field: str = "spec.containers[0].image",
) -> list[str]:
    """The argv that runs `image` with the container's `args` (Kubernetes `args` semantics).

    `ports` are the container's `(containerPort, protocol)` pairs; images that serve them
    (`kaliko/probe`) get every declared port on both TCP and UDP, whatever protocol it was
    declared with (as upstream's netpol test server does), as `--ports 80/TCP,80/UDP`, unless
    `args` already sets `--ports`. So a probe on either protocol finds a listener, and only
    policy decides whether it answers.
    """
    found = image_for(image, field)
    argv = [python, "-m", found.module, *args]
    has_ports = any(arg == "--ports" or arg.startswith("--ports=") for arg in args)
    if found.serves_container_ports and ports and not has_ports:
        argv += ["--ports", container_ports_arg(both_protocols(ports))]
    return argv


def both_protocols(ports: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """Each distinct port of `ports` on TCP, then UDP, in first-seen order."""
    distinct = dict.fromkeys(port for port, _ in ports)
    return [(port, protocol) for port in distinct for protocol in ("TCP", "UDP")]


def container_ports_arg(ports: Sequence[tuple[int, str]]) -> str:
    """Render `[(80, "TCP"), (53, "UDP")]` as the `--ports` value `kaliko/probe` expects."""
    return ",".join(f"{port}/{protocol.upper()}" for port, protocol in ports)
