"""nslab's state can't be turned against the host: symlinks and files not ours are refused, never followed;
garbage is a clear error; the lock answers at once with its holder. Runs against a private RUN_DIR."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from nslab import state
from nslab.errors import LabBusy, StateError
from nslab.plan.actions import AddNetns, StartApp


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    path = tmp_path / "run" / "nslab"
    path.parent.mkdir()
    monkeypatch.setattr(state, "RUN_DIR", str(path))
    return path


def test_run_dir_and_lab_dir_are_made_0700_and_tightened(run_dir):
    state.ensure_dir("lab1")
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((run_dir / "lab1").stat().st_mode & 0o777) == "0o700"
    (run_dir / "lab1").chmod(0o755)
    state.ensure_dir("lab1")
    assert oct((run_dir / "lab1").stat().st_mode & 0o777) == "0o700"


def test_run_dir_symlink_is_refused_and_its_target_untouched(run_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "lab1").mkdir(parents=True)
    (elsewhere / "lab1" / "state.json").write_text("{}")
    victim = elsewhere / "lab1" / "precious"
    victim.write_text("mine")
    run_dir.symlink_to(elsewhere)
    for attempt in (lambda: state.ensure_dir("lab1"), lambda: state.load("lab1"), lambda: state.remove("lab1"),
                    lambda: state.save("lab1", {}), lambda: state.locked("lab1").__enter__(), state.labs):
        with pytest.raises(StateError, match="symbolic link"):
            attempt()
    assert victim.read_text() == "mine" and sorted(p.name for p in (elsewhere / "lab1").iterdir()) == [
        "precious", "state.json"]


def test_lab_dir_symlink_is_refused(run_dir, tmp_path):
    run_dir.mkdir(mode=0o700)
    target = tmp_path / "target"
    target.mkdir()
    (run_dir / "lab1").symlink_to(target)
    with pytest.raises(StateError, match="symbolic link"):
        state.locked("lab1").__enter__()
    with pytest.raises(StateError, match="symbolic link"):
        state.Journal("lab1")
    with pytest.raises(StateError, match="symbolic link"):
        state.remove("lab1")
    assert list(target.iterdir()) == []


def test_state_and_journal_symlinks_are_refused_never_followed(run_dir, tmp_path):
    lab = run_dir / "lab1"
    state.ensure_dir("lab1")
    secret = tmp_path / "secret"
    secret.write_text(json.dumps({"lab": "lab1", "topology": "x", "namespaces": [], "updated": 1}))
    (lab / "state.json").symlink_to(secret)
    with pytest.raises(StateError, match="state.json is a symbolic link"):
        state.load("lab1")
    (lab / "journal").symlink_to(secret)
    with pytest.raises(StateError, match="journal is a symbolic link"):
        state.Journal("lab1")
    state.save("lab1", {"lab": "lab1"})  # replaces the link itself
    assert not (lab / "state.json").is_symlink() and "topology" in secret.read_text()
    (lab / "journal").unlink()
    (lab / "journal").mkdir()
    with pytest.raises(StateError, match="journal is a directory|journal is not a regular file"):
        state.Journal("lab1")
    (lab / "state.json").unlink()
    (lab / "state.json").symlink_to(tmp_path)  # a symlink to a directory
    with pytest.raises(StateError, match="state.json is a symbolic link"):
        state.load("lab1")
    (lab / "state.json").unlink()
    (lab / "state.json").mkdir()
    with pytest.raises(StateError, match="state.json is not a regular file"):
        state.load("lab1")
    with pytest.raises(StateError, match="state.json is a directory"):
        state.save("lab1", {"lab": "lab1"})


@pytest.mark.parametrize("name", ["state.json", "journal", ".lock"])
def test_a_fifo_in_place_of_a_state_file_is_refused_at_once(run_dir, name):
    """Opening a FIFO with no writer blocked forever: status, up and down hung on a state.json or journal
    made one. Reading and writing both refuse it now, without waiting."""
    state.ensure_dir("lab1")
    fifo = run_dir / "lab1" / name
    os.mkfifo(fifo)
    use = {"state.json": lambda: state.load("lab1"), "journal": lambda: state.Journal("lab1"),
           ".lock": lambda: state.locked("lab1").__enter__()}[name]
    with pytest.raises(StateError, match=f"{name} is not a regular file"):
        use()
    if name == "journal":  # made between the journal's read and its first write
        fifo.unlink()
        journal = state.Journal("lab1")
        os.mkfifo(fifo)
        with pytest.raises(StateError, match="journal is not a regular file"):
            journal.doing(AddNetns("lab1-a", mark="nslab:lab1:a", reason="r"))


def test_a_hard_link_to_a_file_elsewhere_is_refused_and_the_file_untouched(run_dir, tmp_path):
    """The lock was truncated and rewritten, the journal appended to, through a hard link a file elsewhere:
    O_NOFOLLOW stops symlinks only."""
    state.ensure_dir("lab1")
    victims = {}
    for name in ("state.json", "journal", ".lock"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("precious")
        os.link(victims[name], run_dir / "lab1" / name)
    for name, use in (("state.json", lambda: state.load("lab1")), ("journal", lambda: state.Journal("lab1")),
                      (".lock", lambda: state.locked("lab1").__enter__())):
        with pytest.raises(StateError, match=f"{name} has 2 hard links"):
            use()
    assert all(v.read_text() == "precious" for v in victims.values())


@pytest.mark.parametrize("kind", ["hard link", "symlink", "fifo"])
def test_lab_process_logs_and_configs_are_written_only_to_files_of_ours(run_dir, tmp_path, kind):
    """App and haproxy logs, and haproxy's and keepalived's configs, go through state.open_file too: an
    O_TRUNC open emptied a hard-linked file before anything was checked, and a FIFO blocked the open."""
    from nslab.kernel import procs
    state.ensure_dir("lab1")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for name in ("b-http.log", "b-haproxy.cfg"):
        path = run_dir / "lab1" / name
        {"hard link": lambda: os.link(victim, path), "symlink": lambda: path.symlink_to(victim),
         "fifo": lambda: os.mkfifo(path)}[kind]()
    with pytest.raises(StateError):
        procs.open_log(str(run_dir / "lab1" / "b-http.log"))
    with pytest.raises(StateError):
        procs.write_config(str(run_dir / "lab1" / "b-haproxy.cfg"), "global\n")
    assert procs.tail(str(run_dir / "lab1" / "b-http.log")) == "(no log)"
    assert victim.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file someone else's needs root")
def test_files_and_dirs_of_another_user_are_refused(run_dir):
    state.ensure_dir("lab1")
    state.save("lab1", {"lab": "lab1", "topology": "x", "namespaces": [], "updated": 1})
    os.chown(run_dir / "lab1" / "state.json", 65534, 65534)
    with pytest.raises(StateError, match="belongs to uid 65534"):
        state.load("lab1")
    (run_dir / "lab1" / "journal").write_text("")
    os.chown(run_dir / "lab1" / "journal", 65534, 65534)
    with pytest.raises(StateError, match="journal belongs to uid 65534"):
        state.Journal("lab1")
    os.chown(run_dir / "lab1", 65534, 65534)
    with pytest.raises(StateError, match="lab1 belongs to uid 65534"):
        state.ensure_dir("lab1")


@pytest.mark.parametrize("content", [
    b"\xaf\x00\xff" * 50, b'"x"', b'{"known": []}', b'{"lab": "lab1", "topology": 5, "namespaces": [], "updated": 1}',
    b'{"lab": "lab1", "topology": "name: lab1\\n", "namesp', b'[]',
    b'{"lab": "lab1", "topology": "t", "namespaces": [5], "updated": 1}',
    b'{"lab": "lab1", "topology": "t", "namespaces": [], "updated": 1, "faults": 5}', b"[" * 100000 + b"]" * 100000,
    b'{"lab": "lab1", "topology": "t", "namespaces": [], "updated": 1, "faults": [{"kind": "link", "node": "a"}]}',
    b'{"lab": "lab1", "topology": "t", "namespaces": [], "updated": 1, "faults": [{"kind": "node", "node": "../x",'
    b' "since": 1, "links": {}, "processes": []}]}',
    b'{"lab": "lab1", "topology": "t", "namespaces": [], "updated": 1, "faults": [{"kind": "node", "node": "a",'
    b' "since": 1e300, "links": {}, "processes": []}]}',
    b'{"lab": "lab1", "topology": "t", "namespaces": [], "updated": 1, "faults": [{"kind": "processes", "node": "a",'
    b' "since": 1, "links": {}, "processes": [{"pid": "1"}]}]}',
    b'{"lab": "lab1", "topology": "t", "namespaces": [], "updated": 1, "token": "a:b"}'],
    ids=["binary", "string", "known-list", "topology-5", "truncated", "list", "bad-namespaces", "faults-5",
         "nested-past-the-parser", "fault-without-fields", "fault-node-path", "fault-since-huge", "fault-pid-text",
         "token-with-colons"])
def test_garbage_state_is_a_clear_error_that_points_at_down(run_dir, content):
    state.ensure_dir("lab1")
    (run_dir / "lab1" / "state.json").write_bytes(content)
    with pytest.raises(StateError) as e:
        state.load("lab1")
    assert "state.json: not a state nslab wrote" in str(e.value) and "nslab down lab1" in str(e.value)


def test_journal_lines_nslab_never_wrote_are_skipped(run_dir):
    state.ensure_dir("lab1")
    good = AddNetns("lab1-a", mark="nslab:lab1:a", reason="r")
    outside = AddNetns("victim", mark="nslab:lab1:a", reason="r")
    app = StartApp("lab1-a", node="a", kind="http", port=80, reason="r")
    lines = [b"\xff\xfe binary\n", b'"x"\n', b'{"do": 5}\n', b"[1, 2]\n",
             json.dumps({"do": outside.record(), "undo": None}).encode() + b"\n",
             json.dumps({"do": {"kind": "AddNetns", "fields": {"ns": {"a": 1}}}}).encode() + b"\n",
             json.dumps({"do": good.record(), "undo": "t0k"}).encode() + b"\n",
             json.dumps({"do": app.record(), "undo": 4242}).encode() + b"\n", b'{"do": ' + b"[" * 100000 + b"\n",
             b'{"do": {"kind": "AddNe']
    (run_dir / "lab1" / "journal").write_bytes(b"".join(lines))
    steps = state.Journal("lab1").steps()
    assert [(a.ns, u) for a, u in steps] == [("lab1-a", "t0k"), ("lab1-a", 4242)]


def _holder(lab, hold_s, run_dir):
    code = textwrap.dedent(f"""
        import sys, time
        from nslab import state
        state.RUN_DIR = {str(run_dir)!r}
        with state.locked({lab!r}):
            print("held", flush=True)
            time.sleep({hold_s})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, "holder-marker"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_busy_lab_says_so_at_once_with_the_holder(run_dir):
    holder = _holder("lab1", 30, run_dir)
    try:
        started = time.monotonic()
        with pytest.raises(LabBusy) as e:
            with state.locked("lab1"):
                pass
        assert time.monotonic() - started < 5.0  # at once: not the holder's 30 s (slack for a busy CI machine)
        assert f"pid {holder.pid}" in str(e.value) and "holder-marker" in str(e.value) and "--wait" in str(e.value)
        assert LabBusy.exit_code == 4
    finally:
        holder.kill()
        holder.wait()


def test_wait_waits_for_the_holder(run_dir):
    holder = _holder("lab1", 1.0, run_dir)
    started = time.monotonic()
    with state.locked("lab1", wait=True):
        waited = time.monotonic() - started
    holder.wait()
    assert waited > 0.5


def test_a_waiter_takes_the_new_lock_after_a_down_removed_the_lab_dir(run_dir):
    """down removes the lab's directory with its lock file while holding it: a waiter that then locks the
    old, unlinked file must not think it holds the lab while a third run locks the new one."""
    code = textwrap.dedent(f"""
        import time
        from nslab import state
        state.RUN_DIR = {str(run_dir)!r}
        with state.locked("lab1"):
            print("held", flush=True)
            time.sleep(1.0)
            state.remove("lab1")
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with state.locked("lab1", wait=True):
        assert (run_dir / "lab1" / ".lock").exists()  # the lock held is the one on disk now
        with pytest.raises(LabBusy):
            with state.locked("lab1"):
                pass
    proc.wait()


def test_keepalived_pid_files_are_read_only_if_regular_files_of_ours(tmp_path):
    from nslab.kernel import keepalived
    good, link, other = tmp_path / "good.pid", tmp_path / "link.pid", tmp_path / "other.pid"
    good.write_text("4242\n")
    other.write_text("4343\n")
    link.symlink_to(other)
    assert keepalived.read_pids([good, link]) == [4242]  # the symlink is never followed
    if os.geteuid() == 0:
        os.chown(other, 65534, 65534)
        assert keepalived.read_pids([other]) == []
