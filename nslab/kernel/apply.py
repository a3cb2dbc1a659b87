"""Runs a plan against the kernel: skips steps already in place, undoes this run's steps on failure."""

import errno

from ..errors import KernelError, NslabError
from ..plan import actions as A
from . import addrs, links, nft, procs, sysctls

EXECUTORS = {
    A.AddNetns: links.AddNetns, A.AddBridge: links.AddBridge, A.AddVeth: links.AddVeth,
    A.AddTunnel: links.AddTunnel, A.Sysctls: sysctls.Sysctls, A.AddAddress: addrs.AddAddress,
    A.AddRoute: addrs.AddRoute, A.Masquerade: nft.Masquerade, A.StartApp: procs.StartApp,
    A.Exec: procs.Exec,
}


def register(action_type, executor):
    """Executors that need optional kernel features (IPVS) register themselves when imported."""
    EXECUTORS[action_type] = executor


def _explain(e: Exception) -> str:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    hints = {errno.EOPNOTSUPP: "the running kernel does not support this (a missing module?)",
             errno.EPERM: "permission denied: nslab needs root", errno.EEXIST: "it already exists"}
    return f"{e}" + (f" — {hints[code]}" if code in hints else "")


def apply(session, plan, progress=None) -> list:
    """Apply every action not yet in place; return the ones that changed something.

    On failure, undo this run's changes in reverse order and raise KernelError.
    """
    changed = []
    for i, action in enumerate(plan):
        ex = EXECUTORS[type(action)]
        if progress:
            progress(i, len(plan), action)
        try:
            # In a namespace this run created nothing can be in place yet: skip the look.
            fresh = {action.ns, getattr(action, "peer_ns", action.ns)} <= session.fresh
            if not (fresh and not isinstance(action, A.AddNetns)) and ex.done(session, action):
                continue
            ex.do(session, action)
            changed.append(action)
        except BaseException as e:  # noqa: BLE001 - anything half-done is rolled back, Ctrl-C included
            rollback(session, changed)
            if isinstance(e, NslabError) or not isinstance(e, Exception):
                raise
            cmd = action.commands()[0] if action.argvs() else type(action).__name__
            raise KernelError(f"step {i + 1} of {len(plan)} failed: `{cmd}` ({action.reason}): {_explain(e)}; "
                              f"the {len(changed)} change(s) this run made were undone") from e
    return changed


def rollback(session, changed) -> None:
    created = {a.ns for a in changed if isinstance(a, A.AddNetns)}
    for action in reversed(changed):
        # Deleting a namespace this run created takes everything inside it along.
        if action.ns in created and not isinstance(action, (A.AddNetns, A.StartApp)):
            continue
        try:
            EXECUTORS[type(action)].undo(session, action)
        except Exception:  # noqa: BLE001 - best effort; the namespace delete below still cleans up
            pass


