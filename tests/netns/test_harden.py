"""A lab that can't be turned against the host or left behind: processes found by namespace identity and
ended until none is left, dead apps shown and restarted, lost or tampered state, names left half-made,
forged marks, recycled pids, locks that answer, and two labs with the same addresses side by side."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback  # noqa: F401 - used by the interrupted-create script below

import pytest

from conftest import running

from nslab import api, state
from nslab.kernel import netns

SEQ = iter(range(1000))


def nslab(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "nslab", *args], capture_output=True, text=True, timeout=timeout)


def unique(tag: str) -> str:
    return f"hd{os.getpid() % 1000}{tag}{next(SEQ)}"


def lab_namespaces(name):
    return [n for n in netns.list_names() if n.startswith(name + "-")]


def processes_in(name):
    return [p for found in netns.pids_inside(lab_namespaces(name)).values() for p in found]



def app_pid(name, node="host2"):
    st = api.status(name, settle=False)
    return next(n for n in st["nodes"] if n["name"] == node)["apps"][0]


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_down_ends_a_process_that_forks_on_sigterm(make_lab):
    lab = make_lab("routing", unique("f"))
    shell = subprocess.Popen([sys.executable, "-m", "nslab", "exec", lab.name, "host2", "--", "sh", "-c",
                              'trap "sleep 1001 & echo \\$! >&2" TERM; echo up >&2; while :; do sleep 0.1; done'],
                             stderr=subprocess.PIPE, text=True)
    try:
        assert shell.stderr.readline().strip() == "up"
        inside = processes_in(lab.name)
        result = nslab("down", lab.name)
        assert result.returncode == 0, result.stderr
        # the child it forked on our SIGTERM (sh also reports its foreground sleep 'Terminated')
        forked = int(next(line for line in shell.stderr if line.strip().isdigit()))
        assert not running(forked), "the child forked on SIGTERM survived down"
        assert not [p for p in inside if running(p)]
        assert not lab_namespaces(lab.name)
    finally:
        shell.kill()
        shell.wait()


def test_a_dead_app_shows_its_exit_status_and_up_restarts_it(make_lab):
    lab = make_lab("routing", unique("d"))
    first = app_pid(lab.name)
    assert first["running"] and first["exit_status"] is None
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: not app_pid(lab.name)["running"] and app_pid(lab.name)["exit_status"] is not None)
    dead = app_pid(lab.name)
    assert dead["pid"] == first["pid"] and dead["exit_status"] == 128 + signal.SIGKILL
    shown = nslab("status", lab.name)
    assert "DEAD (killed by SIGKILL)" in shown.stdout, shown.stdout
    again = lab.up()
    assert [type(a).__name__ for a in again.changed] == ["StartApp"]
    restarted = app_pid(lab.name)
    assert restarted["running"] and restarted["pid"] != first["pid"]
    answer = lab.run("host1", [sys.executable, "-m", "nslab.verify.traffic", "http", "--target", "192.168.2.10:80",
                               "--count", "1"])
    assert "host2" in answer.stdout, answer.stdout + answer.stderr


def test_lost_state_status_says_so_and_up_does_not_trip_over_the_orphan_app(make_lab, root_dir):
    lab = make_lab("routing", unique("l"))
    orphan = app_pid(lab.name)["pid"]
    os.unlink(os.path.join(state.lab_dir(lab.name), "state.json"))
    shown = nslab("status", lab.name)
    assert shown.returncode == 2 and "has namespaces but no state" in shown.stderr, shown.stderr
    assert lab.name in nslab("status").stdout.split()
    os.unlink(os.path.join(state.lab_dir(lab.name), "journal"))  # the orphan app's pid is lost with it
    up = nslab("up", "-q", "--name", lab.name, str(root_dir / "topologies" / "routing.yaml"))
    assert up.returncode == 0, up.stderr
    assert not running(orphan)
    now = app_pid(lab.name)
    assert now["running"] and now["pid"] != orphan
    servers = [p for p in processes_in(lab.name)
               if b"nslab.apps.http" in open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[1:4]]  # python3 [-S] -m
    assert servers == [now["pid"]]


@pytest.mark.parametrize("content", [b"\x8f\xff\x00junk" * 30, b'"x"', b'{"known": []}', b'{"topology": 5}',
                                     b'{"lab": "x", "topology": "name: x\\nnod'],
                         ids=["binary", "string", "known", "topology-5", "truncated"])
def test_garbage_state_gives_a_clear_error_and_down_still_works(make_lab, content, root_dir):
    lab = make_lab("routing", unique("g"))
    with open(os.path.join(state.lab_dir(lab.name), "state.json"), "wb") as f:
        f.write(content)
    for args in (["status", lab.name], ["up", "-q", "--name", lab.name, str(root_dir / "topologies/routing.yaml")]):
        result = nslab(*args)
        assert result.returncode == 3 and "not a state nslab wrote" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    # the list of every lab still lists (other engineers' labs among them), naming this one's trouble
    listed = nslab("status")
    assert listed.returncode == 0, listed.stderr
    assert f"{lab.name}  (state unreadable: " in listed.stdout, listed.stdout
    result = nslab("down", lab.name)
    assert result.returncode == 0, result.stderr
    assert not lab_namespaces(lab.name) and not os.path.exists(state.lab_dir(lab.name))


def test_state_symlinks_are_refused_and_never_followed(make_lab, root_dir, tmp_path):
    lab = make_lab("routing", unique("s"))
    target = tmp_path / "elsewhere.json"
    target.write_text(open(os.path.join(state.lab_dir(lab.name), "state.json")).read())
    before = target.read_text()
    path = os.path.join(state.lab_dir(lab.name), "state.json")
    os.unlink(path)
    os.symlink(target, path)
    result = nslab("status", lab.name)
    assert result.returncode == 3 and "state.json is a symbolic link" in result.stderr, result.stderr
    result = nslab("down", lab.name)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == before and not lab_namespaces(lab.name)

    # The lab's whole state directory a symlink: up refuses before making anything, and writes nothing there.
    other = unique("t")
    os.makedirs(state.RUN_DIR, mode=0o700, exist_ok=True)
    os.symlink(tmp_path, state.lab_dir(other))
    try:
        listed = sorted(os.listdir(tmp_path))
        result = nslab("up", "--name", other, str(root_dir / "topologies" / "routing.yaml"))
        assert result.returncode == 3 and "is a symbolic link" in result.stderr, result.stderr
        assert sorted(os.listdir(tmp_path)) == listed and not lab_namespaces(other)
        assert nslab("down", other).returncode == 3
        assert sorted(os.listdir(tmp_path)) == listed
    finally:
        os.unlink(state.lab_dir(other))


def test_a_forged_mark_is_not_proof(make_lab):
    lab = make_lab("routing", unique("m"))
    forged = {f"{lab.name}-x": f"nslab:{lab.name}:x", f"{lab.name}-y": f"nslab:{lab.name}:y:0123456789abcdef"}
    for ns, mark in forged.items():
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "alias", mark], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"{lab.name}-x", "sleep", "3600"])
    try:
        result = nslab("down", lab.name)
        assert result.returncode == 0, result.stderr
        assert sorted(lab_namespaces(lab.name)) == sorted(forged)
        assert sleeper.poll() is None, "down ended a process in a namespace that was not the lab's"
    finally:
        sleeper.kill()
        sleeper.wait()
        for ns in forged:
            subprocess.run(["ip", "netns", "del", ns])


def test_down_without_state_or_journal_still_removes_the_lab_by_its_marks(make_lab):
    lab = make_lab("routing", unique("n"))
    pids = processes_in(lab.name)
    assert pids
    for name in ("state.json", "journal"):
        os.unlink(os.path.join(state.lab_dir(lab.name), name))
    result = nslab("down", lab.name)
    assert result.returncode == 0, result.stderr
    assert not lab_namespaces(lab.name) and not [p for p in pids if running(p)]


def test_a_recycled_pid_outside_the_lab_is_never_signalled(make_lab, root_dir, tmp_path):
    lab = make_lab("routing", unique("p"))
    app = app_pid(lab.name)["pid"]
    os.kill(app, signal.SIGKILL)
    wait_for(lambda: not running(app))
    bystander = subprocess.Popen(["sleep", "3600"])  # outside the lab, as if it had got the app's pid
    try:
        path = os.path.join(state.lab_dir(lab.name), "journal")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace(f'"undo":{app}', f'"undo":{bystander.pid}'))
        assert app_pid(lab.name)["pid"] == bystander.pid and not app_pid(lab.name)["running"]
        # The file without host2's app: up undoes the app step, which ends the pid it recorded.
        no_app = tmp_path / "routing.yaml"
        no_app.write_text((root_dir / "topologies" / "routing.yaml").read_text().replace("    app: http\n", ""))
        result = nslab("up", "-q", "--name", lab.name, str(no_app))
        assert result.returncode == 0, result.stderr
        assert bystander.poll() is None, "up signalled a pid that no longer lives in the lab"
        result = nslab("down", lab.name)
        assert result.returncode == 0, result.stderr
        assert bystander.poll() is None, "down signalled a pid that no longer lives in the lab"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_name_file_left_by_a_cut_short_delete_neither_breaks_status_nor_blocks_the_lab(make_lab):
    lab = make_lab("routing", unique("u"))
    ns = f"{lab.name}-host1"
    # A down killed between unmount and unlink leaves the name file without a namespace.
    subprocess.run(["umount", netns.path(ns)], check=True)
    assert netns.taken(ns) and not netns.exists(ns)
    shown = nslab("status", lab.name)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert "missing" in shown.stdout
    again = lab.up()  # the journal says it was ours: made again, and everything in it
    assert netns.exists(ns) and again.changed
    assert lab.run("host1", ["ping", "-c", "1", "-W", "2", "192.168.2.10"]).returncode == 0
    subprocess.run(["umount", netns.path(ns)], check=True)
    result = nslab("down", lab.name)
    assert result.returncode == 0, result.stderr
    assert not lab_namespaces(lab.name)


def test_a_name_file_nothing_proves_ours_is_named_not_removed(root_dir):
    name = unique("v")
    placeholder = netns.path(f"{name}-r1")
    open(placeholder, "w").close()
    try:
        result = nslab("up", "--name", name, str(root_dir / "topologies" / "routing.yaml"))
        assert result.returncode == 1 and f"ip netns delete {name}-r1" in result.stderr, result.stderr
        assert lab_namespaces(name) == [f"{name}-r1"] and os.path.exists(placeholder)
    finally:
        os.unlink(placeholder)
        if os.path.exists(state.lab_dir(name)):
            state.remove(name)


def test_ctrl_c_while_a_namespace_is_made_leaves_nothing_behind():
    """A KeyboardInterrupt that lands inside netns.create (it waits for a worker thread that unshares and
    mounts) must leave neither a namespace nor its name file: the caller is told it failed, so nothing
    would remove them."""
    prefix = unique("c")
    script = textwrap.dedent(f"""
        import signal, traceback
        from nslab.kernel import netns
        inside = [False]
        def interrupt(*_):
            if inside[0]:  # one Ctrl-C per create(), and only while it may run: the bookkeeping stays whole
                inside[0] = False
                raise KeyboardInterrupt
        signal.signal(signal.SIGINT, interrupt)
        print("ready", flush=True)
        made = []
        for i in range(150):
            name = "{prefix}-" + str(i)
            try:
                inside[0] = True
                netns.create(name)
                inside[0] = False
                made.append(name)
            except KeyboardInterrupt as e:
                inside[0] = False
                if not any(f.f_code.co_filename.endswith("netns.py") for f, _ in traceback.walk_tb(e.__traceback__)):
                    made.append(name)  # it landed after create() returned
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(" ".join(made), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        while proc.poll() is None:
            time.sleep(0.002 + (time.monotonic_ns() % 3000) / 1e6)
            proc.send_signal(signal.SIGINT)
        made = set(proc.stdout.read().split())
        assert proc.returncode == 0, proc.stderr.read()
        left = set(lab_namespaces(prefix))
        assert left == made, f"left behind though create() raised: {sorted(left - made)}"
        assert len(made) < 150  # the interrupts did land
    finally:
        for n in lab_namespaces(prefix):
            netns.delete(n)


def _hold_lock(lab):
    code = textwrap.dedent(f"""
        import sys
        from nslab import state
        with state.locked({lab!r}):
            print("held", flush=True)
            sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code, "lock-holder"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_busy_lab_answers_at_once_and_wait_waits(root_dir):
    name = unique("k")
    path = str(root_dir / "topologies" / "routing.yaml")
    holder = _hold_lock(name)
    try:
        for args in (["up", "--name", name, path], ["down", name]):
            started = time.monotonic()
            result = nslab(*args)
            assert result.returncode == 4, result.stderr
            assert time.monotonic() - started < 10  # the CLI's own start-up, not a wait
            assert f"pid {holder.pid}" in result.stderr and "lock-holder" in result.stderr, result.stderr
        assert not lab_namespaces(name)
        waiter = subprocess.Popen([sys.executable, "-m", "nslab", "up", "-q", "--wait", "--name", name, path],
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert waiter.poll() is None, "--wait did not wait"
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert waiter.wait(timeout=120) == 0, waiter.stderr.read()
        assert len(lab_namespaces(name)) == 5
    finally:
        holder.kill()
        holder.wait()
        if lab_namespaces(name) or os.path.exists(state.lab_dir(name)):
            api.down(name)


def test_two_labs_with_identical_addresses_work_side_by_side(make_lab):
    a, b = make_lab("routing", unique("a")), make_lab("routing", unique("b"))
    b_pids = processes_in(b.name)
    for lab in (a, b):
        out = lab.run("host1", [sys.executable, "-m", "nslab.verify.traffic", "http", "--target",
                                "192.168.2.10:80", "--count", "3"])
        assert json.loads(out.stdout)["by_server"] == {"host2": 3}, out.stdout + out.stderr
    a.down()
    assert not lab_namespaces(a.name) and len(lab_namespaces(b.name)) == 5
    assert all(running(p) for p in b_pids)
    assert b.run("host1", ["ping", "-c", "1", "-W", "2", "192.168.2.10"]).returncode == 0


@pytest.mark.parametrize("left", ["name-file", "unmarked-namespace"])
def test_an_up_killed_while_making_its_first_namespace_leaves_nothing_down_cannot_remove(root_dir, left):
    """What a kill -9 inside netns.create leaves: the journal's 'doing' line for the fabric, and under its
    name either the bare name file or a namespace not marked yet."""
    from nslab.plan.actions import AddNetns
    name = unique("j")
    fabric = f"{name}-fabric"
    os.makedirs(state.ensure_dir(name), exist_ok=True)
    with open(os.path.join(state.lab_dir(name), "journal"), "w") as f:
        f.write(json.dumps({"doing": AddNetns(fabric, mark=f"nslab:{name}:fabric", reason="r").record()}) + "\n")
    if left == "name-file":
        open(netns.path(fabric), "w").close()
    else:
        subprocess.run(["ip", "netns", "add", fabric], check=True)
    try:
        result = nslab("down", name)
        assert result.returncode == 0, result.stderr
        assert not lab_namespaces(name) and not os.path.exists(state.lab_dir(name))
        up = nslab("up", "-q", "--name", name, str(root_dir / "topologies" / "routing.yaml"))
        assert up.returncode == 0, up.stderr
    finally:
        if lab_namespaces(name) or os.path.exists(state.lab_dir(name)):
            nslab("down", name)
        if os.path.lexists(netns.path(fabric)):
            netns.delete(fabric)
