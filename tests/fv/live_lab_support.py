"""Test support for the live-lab fv tests: a lab per module, the CLI against it, what the kernel holds.

`start_lab` enters a `LiveLab` (nftables data plane, embedded backend unless asked) in a
temporary run directory, so its namespaces carry their own prefix and never touch another lab;
`kalikoctl` invokes the real CLI (typer's CliRunner) pointed at that lab; `netns_names`,
`nft_chain` and `netns_inode` read what the kernel has. Needs root: a test that cannot run fails
(it is not skipped).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from kalikoctl.lab_writes import RUN_DIR_ENV
from kalikoctl.main import build_app
from lab.live_lab import LiveLab


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("live-lab tests need root (network namespaces, nftables)", pytrace=False)


def start_lab(run_dir: Path, *, nodes: int = 2, backend: str = "embedded") -> Iterator[LiveLab]:
    require_root()
    with LiveLab(run_dir, nodes=nodes, backend=backend) as lab:
        yield lab


def kalikoctl(lab: LiveLab, *args: str, server: bool = True) -> Result:
    """The real CLI; write commands get ``--server`` (the lab's admin API) unless told otherwise."""
    assert lab.state is not None
    full = [*args, "--server", lab.state.admin] if server else list(args)
    env = {RUN_DIR_ENV: lab.run_dir}
    return CliRunner().invoke(build_app(), full, env=env)


def write_manifests(path: Path, *documents: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return str(path)


def netns_names(prefix: str) -> list[str]:
    run = Path("/run/netns")
    return sorted(p.name for p in run.iterdir() if p.name.startswith(f"{prefix}-")) if run.is_dir() else []


def netns_inode(pid: int | str) -> int:
    """The inode of a process's network namespace (``self`` for this one)."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def named_netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def nft(netns: str, *args: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def nft_chain(netns: str, chain: str) -> list[str]:
    """The rules of ``chain`` in our table, counters stripped (so equal rules compare equal)."""
    lines = nft(netns, "list", "chain", "ip", "kaliko", chain).splitlines()
    rules = [line.strip() for line in lines if line.startswith("\t\t")]
    rules = [rule for rule in rules if not rule.startswith(("comment ", "type "))]  # the chain's own
    return [" ".join(w for w in _strip_counters(rule.split())) for rule in rules]


def _strip_counters(words: list[str]) -> Iterator[str]:
    skip = 0
    for word in words:
        if skip:
            skip -= 1
            continue
        if word == "packets" or word == "bytes":
            skip = 1
            continue
        yield word
