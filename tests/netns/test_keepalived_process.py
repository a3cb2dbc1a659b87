"""keepalived as a lab process on the host kernel (VRRP needs no IPVS): started in a node's namespace with its
files in the lab's state dir, it becomes master and adds the VIP; started again it forgets the notify files of
its run before; undone, no process and none of its files are left."""

import os
import shutil
import time

import pytest

from nslab import state
from nslab.kernel import keepalived, netns, procs
from nslab.kernel.session import Session
from nslab.model import names
from nslab.plan import keepalived as conf
from nslab.plan.actions import StartKeepalived

pytestmark = pytest.mark.skipif(not shutil.which("keepalived"), reason="needs keepalived (scripts/install.sh)")

CONFIG = """global_defs {{
    router_id {lab}
    script_user root
    enable_script_security
}}
vrrp_instance web {{
    state MASTER
    interface eth0
    virtual_router_id 7
    priority 150
    advert_int 1
    virtual_ipaddress {{
        10.0.0.100/32 dev eth0
    }}
    notify_master "/usr/bin/touch {master}"
}}
"""


def vip_on(lab, node):
    with Session() as s:
        from nslab.kernel import observe
        return any(a == "10.0.0.100/32" for i in observe.interfaces(s, names.node_ns(lab, node)) for a in i["addresses"])


def test_keepalived_runs_in_a_node_and_leaves_nothing(make_lab):
    lab = make_lab("routing")
    name = lab.name
    node = lab.topo.nodes[0].name
    ns = names.node_ns(name, node)
    iface = lab.topo.nodes[0].interfaces[0].name
    master = conf.vrrp_file(name, node, "web", "master")
    action = StartKeepalived(ns, node=node, config=CONFIG.format(lab=name, master=master).replace("eth0", iface),
                             conf=conf.conf_path(name, node),
                             pids=tuple(conf.pid_path(name, node, p) for p in conf.PROCESSES),
                             notify_dir=conf.notify_dir(name))
    ex = keepalived.KeepalivedExecutor
    with Session(run_dir=state.lab_dir(name)) as s:
        pid = ex.do(s, action)
        try:
            assert procs.alive_in(pid, ns) and len(keepalived.read_pids(action.pids)) == 2  # parent and vrrp
            assert all(procs.alive_in(p, ns) for p in keepalived.read_pids(action.pids))
            deadline = time.monotonic() + 30
            while not (os.path.exists(master) and vip_on(name, node)) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert os.path.exists(master) and vip_on(name, node), "keepalived never became VRRP master"
            stale = conf.vrrp_file(name, node, "web", "backup")
            open(stale, "w").close()
            ex.undo(s, action, pid)
            assert not vip_on(name, node)  # keepalived took its VIP away as it stopped
            pid = ex.do(s, action)  # started again: the files of the run before are forgotten
            assert not os.path.exists(stale)
        finally:
            children = keepalived.read_pids(action.pids)
            ex.undo(s, action, pid)
    assert not any(procs.alive_in(p, ns) for p in [pid, *children])
    assert not any(os.path.exists(p) for p in (action.conf, *action.pids))
    assert netns.exists(ns)
