"""`NftablesDataPlane`: the `DataPlane` contract on the kernel's nftables, through libnftables in-process.

Owns one libnftables context, the `Rendered` state it last programmed successfully, and the
transactions: the first `apply` replaces our table whole, later ones send `update_script`'s delta;
`resync` reads the table back and repairs drift. A delta that `nft_batch` can compile (a pod change:
set and map elements, endpoint chains) goes straight to netlink as one batch, skipping
libnftables' per-transaction cache fetch; any other script goes through libnftables. It does not
own rule text, models or scripts (`nft_rules`, `nft_render`, `nft_model`), their netlink encoding
(`nft_batch`), parsing listings (`nft_readback`) or when to apply (the applier).

Which namespace: with ``netns=None`` the driver programs the namespace the process runs in (the
lab starts each agent with ``ip netns exec <node netns>``, so production uses this). With a name,
every libnftables and netlink call runs on a `NetnsThread` that entered that namespace once; tests
and the benchmark use that to drive several nodes from one process.

Invariants:
* every change is one ``nft -f``-style script = one kernel transaction, whichever way it is sent;
  when the kernel or nft refuses it, nothing of it applies, `DataPlaneError` carries the error
  text, `programmed()` is unchanged, and the next `apply` first resyncs (the refusal may have
  been caused by drift);
* only ``table ip kaliko`` is ever named: other tables in the namespace are never read or written;
* `resync` costs one netlink round trip when the namespace's ruleset generation is still the one
  our last transaction produced (nothing, ours or foreign, changed since); otherwise it reads the
  table back (chains and rule comments over netlink, chain by chain; each set through
  libnftables) and compares. ``resync(full=True)`` always compares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

import nftables

from node_agent.dataplane.netns_thread import NetnsThread
from node_agent.dataplane.nft_batch import compile_script
from node_agent.dataplane.nft_model import SetSpec, create_script, delete_script, update_script
from node_agent.dataplane.nft_netlink import NetlinkError, NftNetlink
from node_agent.dataplane.nft_readback import KernelChain, KernelTable, drift, kernel_model, parse_sets
from node_agent.dataplane.nft_render import EMPTY, Rendered, render
from node_agent.dataplane.nft_rules import FAMILY, TABLE, RenderError
from node_agent.dataplane.protocol import DataPlaneError
from policycore.ir import NodeState

log = logging.getLogger(__name__)
T = TypeVar("T")

ERROR_TEXT_MAX = 4000


class NftablesDataPlane:
    """The nftables data plane; see the module docstring."""

    def __init__(self, netns: str | None = None, *, fast_path: bool = True) -> None:
        self.netns = netns
        self.fast_path = fast_path
        """Send scripts `nft_batch` can compile straight over netlink (False: always libnftables)."""
        self._thread = NetnsThread(netns) if netns else None
        self._nft, self._netlink = self._call(self._open)
        self._rendered: Rendered = EMPTY
        self._created = False
        self._generation: int | None = None
        self._needs_resync = False
        self.last_script = ""
        """The text of the last transaction sent (applied or refused), for tests and debugging."""
        self.last_path = ""
        """How it was sent: ``"netlink"`` (the fast path, `nft_batch`) or ``"libnftables"``."""

    @staticmethod
    def _open() -> tuple[nftables.Nftables, NftNetlink]:
        nft = nftables.Nftables()
        nft.set_stateless_output(True)
        nft.set_numeric_proto_output(True)
        nft.set_handle_output(False)
        return nft, NftNetlink()

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        return fn(*args) if self._thread is None else self._thread.call(fn, *args)

    def _transact(self, script: str, sets: Mapping[str, SetSpec] | None = None) -> None:
        """Run one transaction; raise `DataPlaneError` with the kernel's or nft's text when refused.

        With ``sets`` (the table's sets once the script has run), a script `nft_batch` can compile
        goes straight to netlink; anything else goes through libnftables.
        """
        self.last_script = script
        batch = compile_script(script, sets) if sets is not None and self.fast_path else None
        self.last_path = "libnftables" if batch is None else "netlink"

        def run() -> tuple[int, str, int, int]:
            before = self._netlink.generation()
            if batch is None:
                rc, _out, err = self._nft.cmd(script)
            else:
                try:
                    self._netlink.transact(batch)
                    rc, err = 0, ""
                except NetlinkError as error:
                    rc, err = 1, error.strerror or str(error)
            return rc, err, before, self._netlink.generation()

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
        if self._created:
            script = update_script(self._rendered.model, new.model, new.moves)
        else:
            script = create_script(new.model)
        if script:
            try:
                self._transact(script, new.model.sets)
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
        if (
            not full
            and self._generation is not None
            and self._call(self._netlink.generation) == self._generation
        ):
            return 0
        desired = self._rendered.model
        try:
            listed = self._call(self._read_table)
        except (NetlinkError, DataPlaneError) as err:
            raise DataPlaneError(f"nftables: cannot read our table back: {err}") from err
        if listed is None:
            log.warning("nftables: our table is gone: recreating it")
            self._transact(create_script(desired))
            self._needs_resync = False
            return len(desired.sets) + len(desired.chains)
        kernel = kernel_model(listed, desired)
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
                self._transact(script, desired.sets)
            except DataPlaneError as err:
                log.warning("nftables: repair refused (%s): rebuilding the table", err)
                self._transact(create_script(desired))
        self._needs_resync = False
        return repairs

    def _read_table(self) -> KernelTable | None:
        """Our table as the kernel holds it (None when it does not exist); runs in the namespace."""
        if not self._netlink.table_exists(TABLE):
            return None
        table = KernelTable(others=self._netlink.others(TABLE))
        for name, hook in self._netlink.chains(TABLE):
            table.chains[name] = KernelChain(hook, self._netlink.rule_comments(TABLE, name))
        for name, is_map in self._netlink.sets(TABLE):
            rc, text, err = self._nft.cmd(f"list {'map' if is_map else 'set'} {FAMILY} {TABLE} {name}")
            if rc != 0:
                raise DataPlaneError(f"nft list {name}: {err.strip()}")
            table.sets.update(parse_sets(text))
        return table

    def remove_table(self) -> None:
        """Delete our table (for teardown of a lab or a test; an agent never calls this)."""
        self._transact(delete_script())
        self._rendered, self._created = EMPTY, False

    def close(self) -> None:
        """Release the context and the worker thread; the programmed table stays."""
        self._call(self._netlink.close)
        if self._thread is not None:
            self._thread.close()
