"""Runs a plan against the kernel: skips steps already in place, journals each step it applies, and undoes
journalled steps in reverse (this run's on failure, the ones a topology no longer has, a whole lab)."""

import errno
import os
import signal

from ..errors import KernelError, NslabError
from ..plan import actions as A
from . import netns
from .executors import EXECUTORS, executor  # noqa: F401 - EXECUTORS: the registry, for callers of apply


def _explain(e: Exception) -> str:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    hints = {errno.EOPNOTSUPP: "the running kernel does not support this (a missing module?)",
             errno.EPERM: "permission denied: nslab needs root", errno.EEXIST: "it already exists"}
    return f"{e}" + (f" — {hints[code]}" if code in hints else "")


def _namespaces(action) -> set:
    return {action.ns, getattr(action, "peer_ns", action.ns)}


# For tests only: NSLAB_TEST_FAULT=STEP[:HOW] makes step STEP (1-based, as errors count) of every plan
# apply() runs fail, so a test can prove that a failure or a Ctrl-C at any step leaves nothing behind. HOW:
#   fail          the step raises before it changes anything (the default)
#   fail-after    the step makes its change, then raises before it returns (a failure half-way through)
#   sigint        a real SIGINT reaches the process before the step changes anything
#   sigint-after  a real SIGINT reaches it once the step made its change, before the step returns
#   kill          SIGKILL before the step changes anything: a `kill -9` at a known moment (nothing rolls back)
#   kill-after    SIGKILL once the step made its change
FAULT_ENV = "NSLAB_TEST_FAULT"
FAULT_KINDS = ("fail", "fail-after", "sigint", "sigint-after")  # those `up` rolls back
KILLS = ("kill", "kill-after")


def _fault():
    """(plan index, kind) of the fault a test asked for, or None."""
    text = os.environ.get(FAULT_ENV)
    if not text:
        return None
    step, _, kind = text.partition(":")
    kind = kind or "fail"
    if not step.isdigit() or int(step) < 1 or kind not in FAULT_KINDS + KILLS:
        raise ValueError(f"{FAULT_ENV}={text!r}: expected STEP[:{'|'.join(FAULT_KINDS + KILLS)}], STEP from 1")
    return int(step) - 1, kind


def _inject(fault, index: int, after: bool) -> None:
    if fault is None or fault[0] != index or fault[1].endswith("-after") != after:
        return
    if fault[1] in KILLS:
        os.kill(os.getpid(), signal.SIGKILL)
    if fault[1].startswith("sigint"):
        signal.raise_signal(signal.SIGINT)  # KeyboardInterrupt, as from a user's Ctrl-C
    raise OSError(errno.EIO, f"fault injected by {FAULT_ENV} (a test hook)")


def _batches(plan, alone=None):
    """(index, actions): consecutive actions of one kind and namespace together when its executor takes
    many at once (sysctls: a big lab sets thousands, and one visit to the namespace reads or writes them
    all; IPVS real servers: many requests per netlink send), every other action alone, and so is plan[alone]."""
    i = 0
    while i < len(plan):
        j = i + 1
        kind = type(plan[i])
        if hasattr(EXECUTORS[kind], "do_many") and i != alone:
            while j < len(plan) and type(plan[j]) is kind and plan[j].ns == plan[i].ns and j != alone:
                j += 1
        yield i, plan[i:j]
        i = j


def _not_done(session, ex, batch) -> list:
    """The actions of a batch that are not in place yet."""
    first = batch[0]
    # In a namespace this run created (or, for a plan's diff, one still to create) nothing can be in place
    # yet, nor a veth pair with an end there: skip the look.
    if not isinstance(first, A.AddNetns) and _namespaces(first) & session.fresh:
        return list(batch)
    flags = ex.done_many(session, batch) if len(batch) > 1 else [ex.done(session, first)]
    return [a for a, ok in zip(batch, flags) if not ok]


def apply(session, plan, progress=None, journal=None) -> list:
    """Apply every action not yet in place, journalling each step (action and undo data) as it is done;
    return the actions that changed something.

    On failure or Ctrl-C, undo this run's steps in reverse order and raise KernelError (on Ctrl-C a
    KeyboardInterrupt naming the step).
    """
    fault = _fault()
    steps = []  # (action, undo data) this run applied
    for i, batch in _batches(plan, fault and fault[0]):
        ex = executor(batch[0])
        for k, action in enumerate(batch):
            if progress:
                progress(i + k, len(plan), action)
        todo = []
        try:
            todo = _not_done(session, ex, batch)
            if not todo:
                continue
            first = getattr(ex, "journal_first", False) and journal is not None
            if first:
                journal.doing(todo[0])
            try:
                _inject(fault, i, after=False)
                undos = ex.do_many(session, todo) if len(todo) > 1 else [ex.do(session, todo[0])]
                _inject(fault, i, after=True)
            except BaseException as cut:
                if first:  # whatever a do() cut short (Ctrl-C) left goes, then the step it began is over
                    if not isinstance(cut, FileExistsError):  # that name is someone else's: nothing made
                        ex.undo_unfinished(session, todo[0])
                    journal.undone([todo[0]])
                raise
            done = list(zip(todo, undos))
            steps += done
            if journal is not None:
                journal.done(done)
        except BaseException as e:  # noqa: BLE001 - anything half-done is rolled back, Ctrl-C included
            rollback(session, steps, journal)
            failed = getattr(e, "action", todo[0] if todo else batch[0])
            n = i + next((k for k, a in enumerate(batch) if a is failed), 0) + 1
            cmd = failed.commands()[0] if failed.argvs() else type(failed).__name__
            undone = f"the {len(steps)} change(s) this run made were undone"
            if isinstance(e, KeyboardInterrupt):
                raise KeyboardInterrupt(f"at step {n} of {len(plan)}: `{cmd}` ({failed.reason}); {undone}") from e
            if isinstance(e, NslabError) or not isinstance(e, Exception):
                raise
            raise KernelError(f"step {n} of {len(plan)} failed: `{cmd}` ({failed.reason}): {_explain(e)}; "
                              f"{undone}") from e
        for action, data in done:
            session.journalled[action.identity()] = data
    return [a for a, _ in steps]


def missing(session, plan) -> list:
    """The actions of plan that are not in place (reads only): what apply() would do now."""
    session.fresh |= {a.ns for a in plan if isinstance(a, A.AddNetns) and not netns.exists(a.ns)}
    out = []
    for _, batch in _batches(plan):
        out += _not_done(session, executor(batch[0]), batch)
    return out


def to_undo(steps) -> list:
    """The (action, undo data) steps that undo() undoes itself, newest first: all but those wholly inside
    namespaces the steps delete (deleting a namespace takes everything in it). A veth pair with one end in
    a namespace that stays is deleted itself: the kernel takes the other end only when it frees the deleted
    namespace, later, so the staying one would still show the cable for a while."""
    deleting = {a.ns for a, _ in steps if isinstance(a, A.AddNetns)}
    return [(a, u) for a, u in reversed(steps) if isinstance(a, A.AddNetns) or not _namespaces(a) <= deleting]


def objects(actions) -> list:
    """One action per object (identity), the first seen: an object changed in place has several steps."""
    seen = set()
    return [a for a in actions if not (a.identity() in seen or seen.add(a.identity()))]


def undo(session, steps, journal=None, strict=True) -> list:
    """Undo journalled (action, undo data) steps, newest first, journalling each as undone; return the
    objects undone, each as its newest action (see to_undo, objects). strict: raise KernelError on the
    first failure; else go on (best effort: a step that failed stays in the journal, for the next try)."""
    explicit = {id(a) for a, _ in to_undo(steps)}
    undone, unjournalled = [], []
    try:
        for action, data in reversed(steps):
            if id(action) in explicit:
                try:
                    executor(action).undo(session, action, data)
                except Exception as e:  # noqa: BLE001 - reported (strict) or left for the next try
                    if strict:
                        cmd = action.commands()[0] if action.argvs() else type(action).__name__
                        raise KernelError(f"could not undo `{cmd}` ({action.reason}): {_explain(e)}") from e
                    continue
                undone.append(action)
            unjournalled.append(action)
            if journal is not None and id(action) in explicit:
                # Steps inside a namespace to be deleted are journalled with the next real undo: if the run
                # dies before, they stay in the journal, and the namespace's delete still takes them.
                journal.undone(unjournalled)
                unjournalled = []
    finally:
        if journal is not None:
            journal.undone(unjournalled)
    return objects(undone)


def rollback(session, steps, journal=None) -> None:
    """Undo this run's steps, best effort (a failure is being reported already)."""
    undo(session, steps, journal, strict=False)


def finish_unfinished(session, journal) -> list:
    """Undo the steps a killed run began and never finished (journal.pending()); return their actions."""
    pending = journal.pending()
    for action in pending:
        executor(action).undo_unfinished(session, action)
        journal.undone([action])
    return pending
