"""The fast-path compiler without a kernel: which scripts it takes, and the bytes it writes.

That the kernel ends up with exactly what libnftables would have written is proven by
tests/fv/test_nft_fast_path.py; here: everything outside the vocabulary (tables, sets, base chains,
interval sets, policy rules, unknown sets, oversized scripts) falls back whole (None), keys are
encoded from the set's type, verdict-map elements carry their goto, long element lists are split
over several messages, and rule comments travel as nftnl user data.
"""

from __future__ import annotations

import socket
import struct

import pytest

from node_agent.dataplane.nft_batch import (
    BATCH_MAX_BYTES,
    DELCHAIN,
    DELRULE,
    DELSETELEM,
    NEWCHAIN,
    NEWRULE,
    NEWSETELEM,
    NLM_F_APPEND,
    NLM_F_CREATE,
    compile_script,
)
from node_agent.dataplane.nft_model import update_script
from node_agent.dataplane.nft_render import render
from node_agent.dataplane.nft_rules import endpoint_chain, set_name
from policycore.ir import EndpointProgram, IpSet, NodeState, PolicyProgram, Rule, TierProgram
from policycore.naming import iface_name

POLICY = PolicyProgram("p", ingress=(Rule("allow", "p/ingress/0", src_ipsets=("s:web",), protocol=6),))
WEB = IpSet("s:web", "ip", frozenset({"198.18.0.2"}))
HTTP = IpSet("s:http", "ip_port", frozenset({"198.18.0.2,tcp:8080"}))
NETS = IpSet("n:x", "net", frozenset({"10.0.0.0/8"}))
A = EndpointProgram("ns/a", iface_name("ns", "a"), ("198.18.0.2",), ingress=(TierProgram("t", ("p",)),))
STATE = NodeState({s.set_id: s for s in (WEB, HTTP, NETS)}, {"p": POLICY}, {A.key: A})
MODEL = render(STATE).model
SETS = MODEL.sets


def _ip(text: str) -> bytes:
    return socket.inet_aton(text)


@pytest.mark.parametrize(
    "script",
    [
        "add table ip kaliko\n",
        "add set ip kaliko s-x { type ipv4_addr; }\n",
        "delete set ip kaliko s-x\n",
        "add chain ip kaliko forward { type filter hook forward priority filter; policy accept; }\n",
        f"add element ip kaliko {set_name('n:x')} {{ 10.0.0.0/8 }}\n",  # interval set
        "add element ip kaliko s-unknown { 10.0.0.1 }\n",
        f"add element ip kaliko {set_name('s:web')} {{ 10.0.0.300 }}\n",
        'add element ip kaliko wl-sources { "kal*" . 10.0.0.1 }\n',
        'add element ip kaliko to-wl { "kalwaytoolongname" : goto x }\n',
        f"add rule ip kaliko x ip saddr @{set_name('s:web')} counter accept\n",  # policy rules: libnftables
        "add rule ip kaliko x counter log\n",
        "add rule ip kaliko x counter accept drop\n",
        "add rule ip kaliko x counteraccept\n",
        "add rule ip kaliko x meta mark & 0x100000000 == 0 counter accept\n",  # not a 32-bit mark
        "add rule ip kaliko x meta mark set meta mark | 0x10000 return\n",  # egress allow: libnftables
        f"add element ip kaliko {set_name('s:web')} {{ 10.0.0.1 }}\nadd table ip kaliko\n",  # all or nothing
        f"add element ip kaliko {set_name('s:web')} {{ 10.0.0.1 }}\n" * (BATCH_MAX_BYTES // 40),
    ],
)
def test_anything_outside_the_vocabulary_falls_back_whole(script: str) -> None:
    assert compile_script(script, SETS) is None


def test_the_fast_path_takes_every_line_of_a_pod_change() -> None:
    b = EndpointProgram("ns/b", iface_name("ns", "b"), ("198.18.0.3",), ingress=A.ingress, egress=A.ingress)
    state = NodeState(dict(STATE.ipsets), dict(STATE.policies), {A.key: A, b.key: b})
    state.ipsets["s:web"] = IpSet("s:web", "ip", frozenset({"198.18.0.2", "198.18.0.3"}))
    moved = render(state, render(STATE))
    script = update_script(MODEL, moved.model)
    messages = compile_script(script, moved.model.sets)
    assert messages is not None
    assert [m.source for m in messages] == [x for x in script.splitlines() if x]
    kinds = {m.kind for m in messages}
    assert kinds == {NEWCHAIN, NEWRULE, NEWSETELEM}
    back = compile_script(update_script(moved.model, MODEL), MODEL.sets)
    assert back is not None and {m.kind for m in back} == {DELSETELEM, DELRULE, DELCHAIN}


def test_keys_follow_the_set_type() -> None:
    ip_set, http, sources = set_name("s:web"), set_name("s:http"), "wl-sources"
    (plain,) = compile_script(f"add element ip kaliko {ip_set} {{ 10.0.0.1 }}\n", SETS) or []
    assert (plain.kind, plain.flags) == (NEWSETELEM, NLM_F_CREATE)
    assert b"kaliko\0" in plain.attrs and ip_set.encode() + b"\0" in plain.attrs
    assert struct.pack("=HH", 8, 1) + _ip("10.0.0.1") in plain.attrs  # NFTA_DATA_VALUE, 4 bytes
    (named,) = compile_script(f"delete element ip kaliko {http} {{ 10.0.0.1 . 6 . 8080 }}\n", SETS) or []
    assert named.kind == DELSETELEM
    key = _ip("10.0.0.1") + struct.pack("=I", 6) + struct.pack("!H", 8080) + b"\0\0"  # 4-byte registers
    assert struct.pack("=HH", 16, 1) + key in named.attrs
    (source,) = compile_script(f'add element ip kaliko {sources} {{ "kal1" . 10.0.0.1 }}\n', SETS) or []
    assert struct.pack("=HH", 24, 1) + b"kal1".ljust(16, b"\0") + _ip("10.0.0.1") in source.attrs


def test_verdict_map_elements_carry_their_goto_and_deletes_carry_only_keys() -> None:
    chain = endpoint_chain(A.iface, "ingress")
    (add,) = compile_script(f'add element ip kaliko to-wl {{ "{A.iface}" : goto {chain} }}\n', SETS) or []
    assert struct.pack("!i", -4) in add.attrs and chain.encode() + b"\0" in add.attrs  # NFT_GOTO
    (delete,) = compile_script(f'delete element ip kaliko to-wl {{ "{A.iface}" }}\n', SETS) or []
    assert chain.encode() not in delete.attrs and A.iface.encode() in delete.attrs


def test_long_element_lists_are_split_over_messages() -> None:
    members = ", ".join(f"10.1.{i >> 8}.{i & 255}" for i in range(1300))
    messages = compile_script(f"add element ip kaliko {set_name('s:web')} {{ {members} }}\n", SETS)
    assert messages is not None and len(messages) == 3
    assert all(len(m.attrs) < 0xFFFF for m in messages)
    assert sum(m.attrs.count(struct.pack("=HH", 8, 1)) for m in messages) == 1300


def test_rules_carry_their_expressions_and_comment() -> None:
    (rule,) = (
        compile_script(
            'add rule ip kaliko c meta mark & 0x10000 == 0x10000 counter accept comment "x y"\n', SETS
        )
        or []
    )
    assert (rule.kind, rule.flags) == (NEWRULE, NLM_F_CREATE | NLM_F_APPEND)
    names = [n for n in (b"meta\0", b"bitwise\0", b"cmp\0", b"counter\0", b"immediate\0") if n in rule.attrs]
    assert len(names) == 5
    assert rule.attrs.index(b"meta\0") < rule.attrs.index(b"cmp\0") < rule.attrs.index(b"immediate\0")
    assert struct.pack("=I", 0x10000) in rule.attrs  # the mark is host-order
    userdata = struct.pack("=HH", 10, 7) + bytes((0, 4)) + b"x y\0"  # NFTA_RULE_USERDATA: comment TLV
    assert rule.attrs.endswith(userdata + b"\0\0")  # padded to 4 bytes
    (chain,) = compile_script('add chain ip kaliko c { comment "ingress of endpoint ns/a"; }\n', SETS) or []
    assert chain.kind == NEWCHAIN and b"\0\x19ingress of endpoint ns/a\0" in chain.attrs
