"""Runs a plan against the kernel: skips steps already in place, journals each step it applies, and undoes
journalled steps in reverse (this run's on failure, the ones a topology no longer has, a whole lab)."""

import errno

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


def _batches(plan):
    """(index, actions): consecutive sysctls of one namespace together (a big lab sets thousands, and one
    visit to the namespace reads or writes them all), every other action alone."""
    i = 0
    while i < len(plan):
        j = i + 1
        if type(plan[i]) is A.Sysctl:
            while j < len(plan) and type(plan[j]) is A.Sysctl and plan[j].ns == plan[i].ns:
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

    On failure or Ctrl-C, undo this run's steps in reverse order and raise KernelError (or re-raise).
    """
    steps = []  # (action, undo data) this run applied
    for i, batch in _batches(plan):
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
                undos = ex.do_many(session, todo) if len(todo) > 1 else [ex.do(session, todo[0])]
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
            if isinstance(e, NslabError) or not isinstance(e, Exception):
                raise
            failed = getattr(e, "action", todo[0] if todo else batch[0])
            n = i + next((k for k, a in enumerate(batch) if a is failed), 0) + 1
            cmd = failed.commands()[0] if failed.argvs() else type(failed).__name__
            raise KernelError(f"step {n} of {len(plan)} failed: `{cmd}` ({failed.reason}): {_explain(e)}; "
                              f"the {len(steps)} change(s) this run made were undone") from e
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
    """The (action, undo data) steps that undo() undoes itself, newest first: all but those inside a
    namespace one of the steps deletes (deleting a namespace takes everything in it; a veth pair goes with
    either end's namespace)."""
    deleting = {a.ns for a, _ in steps if isinstance(a, A.AddNetns)}
    return [(a, u) for a, u in reversed(steps) if isinstance(a, A.AddNetns) or not _namespaces(a) & deleting]


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
