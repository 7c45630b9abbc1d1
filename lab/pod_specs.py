"""Pod documents as the lab reads them: validated, with the image, ports and address they ask for.

Owns `read_wish` (one Pod document → `PodWish`: the one validator of `policycore.model`, then the
lab's own checks — a built-in image, a well-formed ``cni.projectcalico.org/ipAddrs``), `PodError`
(every problem as ``documents[i].field.path: reason``) and `placed_document` (the Pod as the CNI
plugin registers it). Pure: no namespaces, processes or I/O. It does not decide placement or
addresses (`lab.pods`, `lab.ipam`).

A pod runs one process: its first container's image (`DEFAULT_IMAGE` when none is given) with
that container's args; the ports are every container's declared ports, de-duplicated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lab.apps.images import UnknownImageError, image_for
from lab.ipam import IpamError, requested_address
from policycore.model import ValidationFailed, parse_resource, to_document
from policycore.model.kube import Pod
from policycore.naming import endpoint_key

DEFAULT_IMAGE = "kaliko/probe"


class PodError(ValueError):
    """Pod documents the lab cannot run; ``problems`` are ``documents[i].field.path: reason`` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PodWish:
    """What one Pod document asks of the lab (validated)."""

    index: int
    pod: Pod
    key: str
    image: str
    args: tuple[str, ...]
    ports: tuple[tuple[int, str], ...]
    requested_ip: str | None

    @property
    def fingerprint(self) -> str:
        text = json.dumps([self.image, self.args, self.ports])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_wish(index: int, document: Mapping[str, Any]) -> PodWish:
    """Validate one Pod document for the lab (the one validator, then the lab's own checks)."""
    where = f"documents[{index}]"
    try:
        resource = parse_resource(document)
    except ValidationFailed as err:
        raise PodError([f"{where}.{p.path or '(document)'}: {p.reason}" for p in err.problems]) from None
    assert isinstance(resource, Pod)
    containers = resource.spec.containers
    image = (containers[0].image if containers else None) or DEFAULT_IMAGE
    field_path = f"{where}.spec.containers[0].image"
    try:
        image_for(image, field_path)
    except UnknownImageError as err:
        raise PodError([str(err)]) from None
    try:
        requested = requested_address(resource.metadata.annotations)
    except IpamError as err:
        raise PodError([f"{where}.{err}"]) from None
    ports = tuple((p.container_port, p.protocol) for c in containers for p in c.ports)
    args = tuple(containers[0].args) if containers else ()
    key = endpoint_key(resource.metadata.namespace or "default", resource.metadata.name)
    return PodWish(index, resource, key, image, args, tuple(dict.fromkeys(ports)), requested)


def placed_document(pod: Pod, node: str, ip: str) -> dict[str, Any]:
    """The Pod as the CNI plugin registers it: on ``node``, running, with ``ip``."""
    doc = to_document(pod)
    doc["spec"]["nodeName"] = node
    doc["status"] = {**doc.get("status", {}), "podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"}
    return doc
