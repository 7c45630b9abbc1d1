"""`NftablesDataPlane`: the `DataPlane` contract on the kernel's nftables, through libnftables in-process.

Owns one libnftables context, the `Rendered` state it last programmed successfully, and the
transactions: the first `apply` replaces our table whole, later ones send `update_script`'s delta;
`resync` reads the table back and repairs drift. It does not own rule text or scripts
(`nft_rules`, `nft_render`), parsing listings (`nft_readback`) or when to apply (the applier).

Which namespace: with ``netns=None`` the driver programs the namespace the process runs in (the
lab starts each agent with ``ip netns exec <node netns>``, so production uses this). With a name,
every libnftables and netlink call runs on a `NetnsThread` that entered that namespace once; tests
and the benchmark use that to drive several nodes from one process.

Invariants:
* every change is one ``nft -f``-style script = one kernel transaction; when nft refuses it,
  nothing of it applies, `DataPlaneError` carries nft's error text, `programmed()` is unchanged,
  and the next `apply` first resyncs (the refusal may have been caused by drift);
* only ``table ip kaliko`` is ever named: other tables in the namespace are never read or written;
* `resync` costs one netlink round trip when the namespace's ruleset generation is still the one
  our last transaction produced (nothing, ours or foreign, changed since); otherwise it lists the
  table and compares. ``resync(full=True)`` always compares.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from typing import TypeVar

import nftables

from node_agent.dataplane.netns_thread import NetnsThread
from node_agent.dataplane.nft_readback import drift, kernel_model, parse_listing
from node_agent.dataplane.nft_render import EMPTY, Rendered, create_script, render, update_script
from node_agent.dataplane.nft_rules import FAMILY, TABLE, RenderError
from node_agent.dataplane.protocol import DataPlaneError
from policycore.ir import NodeState

log = logging.getLogger(__name__)
T = TypeVar("T")

_NETLINK_NETFILTER = 12
_NFT_MSG_GETGEN = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN
_NLM_F_REQUEST = 1
_NFTA_GEN_ID = 1
ERROR_TEXT_MAX = 4000


class _Generation:
    """Reads the namespace's nftables ruleset generation id (bumped by every committed transaction)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._seq = 0

    def read(self) -> int:
        self._seq += 1
        header = struct.pack("=IHHII", 20, _NFT_MSG_GETGEN, _NLM_F_REQUEST, self._seq, 0)
        self._sock.send(header + struct.pack("=BBH", socket.AF_UNSPEC, 0, 0))
        data = self._sock.recv(65536)
        length, _type = struct.unpack_from("=IH", data)
        offset = 20
        while offset + 4 <= length:
            attr_len, attr_type = struct.unpack_from("=HH", data, offset)
            if attr_type & 0x3FFF == _NFTA_GEN_ID:
                return int(struct.unpack_from("!I", data, offset + 4)[0])
            offset += (attr_len + 3) & ~3
        raise DataPlaneError("nftables: the generation reply carried no id")

    def close(self) -> None:
        self._sock.close()


class NftablesDataPlane:
    """The nftables data plane; see the module docstring."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._thread = NetnsThread(netns) if netns else None
        self._nft, self._gen = self._call(self._open)
        self._rendered: Rendered = EMPTY
        self._created = False
        self._generation: int | None = None
        self._needs_resync = False
        self.last_script = ""
        """The text of the last transaction sent (applied or refused), for tests and debugging."""

    @staticmethod
    def _open() -> tuple[nftables.Nftables, _Generation]:
        nft = nftables.Nftables()
        nft.set_stateless_output(True)
        nft.set_numeric_proto_output(True)
        nft.set_handle_output(False)
        return nft, _Generation()

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        return fn(*args) if self._thread is None else self._thread.call(fn, *args)

    def _transact(self, script: str) -> None:
        """Run one transaction; raise `DataPlaneError` with nft's text when it is refused."""
        self.last_script = script

        def run() -> tuple[int, str, int, int]:
            before = self._gen.read()
            rc, _out, err = self._nft.cmd(script)
            return rc, err, before, self._gen.read()

        rc, err, before, after = self._call(run)
        if rc != 0:
            raise DataPlaneError(f"nftables refused the transaction: {err.strip()[:ERROR_TEXT_MAX]}")
        self._generation = after if after == (before + 1) & 0xFFFFFFFF else None

    def apply(self, desired: NodeState) -> None:
        """Make our table equal to ``desired`` in one transaction (see the module docstring)."""
        try:
            new = render(desired, self._rendered)
        except RenderError as err:
            raise DataPlaneError(f"cannot render the desired state: {err}") from err
        if self._created and self._needs_resync:
            self.resync(full=True)
        script = update_script(self._rendered.model, new.model) if self._created else create_script(new.model)
        if script:
            try:
                self._transact(script)
            except DataPlaneError:
                self._needs_resync = self._created
                raise
        self._rendered, self._created = new, True

    def programmed(self) -> NodeState:
        return self._rendered.state.copy()

    def resync(self, full: bool = False) -> int:
        """Repair drift in our table; return how many objects (sets, maps, chains) were repaired."""
        if not self._created:
            return 0
        if not full and self._generation is not None and self._call(self._gen.read) == self._generation:
            return 0
        desired = self._rendered.model
        rc, text, err = self._call(self._nft.cmd, f"list table {FAMILY} {TABLE}")
        if rc != 0:
            log.warning("nftables: our table is gone (%s): recreating it", err.strip())
            self._transact(create_script(desired))
            self._needs_resync = False
            return len(desired.sets) + len(desired.chains)
        kernel = kernel_model(parse_listing(text), desired)
        if kernel is None:
            log.warning("nftables: our table holds objects we cannot repair one by one: rebuilding it")
            self._transact(create_script(desired))
            self._needs_resync = False
            return 1
        repairs = drift(kernel, desired)
        script = update_script(kernel, desired)
        if script:
            log.warning("nftables: repairing %d drifted objects in our table", repairs)
            try:
                self._transact(script)
            except DataPlaneError as err:
                log.warning("nftables: repair refused (%s): rebuilding the table", err)
                self._transact(create_script(desired))
        self._needs_resync = False
        return repairs

    def remove_table(self) -> None:
        """Delete our table (for teardown of a lab or a test; an agent never calls this)."""
        self._transact(f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")
        self._rendered, self._created = EMPTY, False

    def close(self) -> None:
        """Release the context and the worker thread; the programmed table stays."""
        self._call(self._gen.close)
        if self._thread is not None:
            self._thread.close()
