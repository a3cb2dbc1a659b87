"""The executor contract, and the one registry that gives each kind of action the executor that makes it real.

Importing this is cheap: the executor modules import pyroute2 only inside the functions that talk netlink.
"""

from typing import Any, Protocol

from ..plan import actions as A
from . import addrs, ipvs, keepalived, links, nft, procs, procsys, tc


class Executor(Protocol):
    """How one kind of action is applied, and taken back.

    done(session, action): the kernel already has what the action describes (read, never changed).
    do(session, action): make it so; return the undo data, JSON-serialisable (it goes into the journal):
        what undo needs to put things back exactly as they were before this do() (None when do() made the
        object, so undo deletes it; the previous value of what it changed in place otherwise).
    undo(session, action, undo_data): the exact inverse of the do() that returned undo_data; a no-op when
        that is gone already (deleting a namespace takes everything in it).

    Optional: journal_first = True asks apply to journal the step before do() (a kill during do() would
    otherwise leave something nothing names); undo_unfinished(session, action) then undoes a do() that
    never returned. SysctlExecutor and IpvsDestExecutor also have done_many/do_many, for consecutive actions of
    their kind in one namespace.
    """

    def done(self, session, action) -> bool: ...

    def do(self, session, action) -> Any: ...

    def undo(self, session, action, undo_data) -> None: ...


EXECUTORS: dict[type, Executor] = {
    A.AddNetns: links.NetnsExecutor,
    A.AddBridge: links.BridgeExecutor,
    A.AddVeth: links.VethExecutor,
    A.AddTunnel: links.TunnelExecutor,
    A.BridgeVlan: links.BridgeVlanExecutor,
    A.AddVlan: links.VlanExecutor,
    A.Sysctl: procsys.SysctlExecutor,
    A.AddAddress: addrs.AddressExecutor,
    A.AddRoute: addrs.RouteExecutor,
    A.Masquerade: nft.MasqueradeExecutor,
    A.Dnat: nft.DnatExecutor,
    A.SetImpair: tc.ImpairExecutor,
    A.IpvsService: ipvs.IpvsServiceExecutor,
    A.IpvsDest: ipvs.IpvsDestExecutor,
    A.StartApp: procs.AppExecutor,
    A.StartProxy: procs.ProxyExecutor,
    A.Exec: procs.ExecExecutor,
    A.StartKeepalived: keepalived.KeepalivedExecutor,
}


def runs_process(action) -> bool:
    """Whether the action runs a lab process of its node (its executor says lab_process = True)."""
    return getattr(EXECUTORS[type(action)], "lab_process", False)


def executor(action) -> Executor:
    """The executor of an action's kind."""
    return EXECUTORS[type(action)]
