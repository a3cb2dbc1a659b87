"""status lists the haproxy a lab runs as a lab process (pid, port, running), and once `nslab fail` has
stopped it, as failed; a proxy-only lab runs on the host kernel (no IPVS), so this is the netns tier's."""

import json
import shutil
import subprocess
import sys

import pytest

from nslab import model

LAB = """
name: pxst
switches: [lan]
nodes:
  client:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.10/24}
  proxy:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.3/24}
    proxy: {port: 80, servers: [web]}
  web:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.11/24}
    app: http
"""

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")


def nslab(*args):
    return subprocess.run([sys.executable, "-m", "nslab", *args], capture_output=True, text=True, timeout=120)


def test_status_lists_haproxy_and_its_fail(nslab_lab):
    lab = nslab_lab(model.loads(LAB, "pxst.yaml"))
    shown = json.loads(nslab("status", lab.name, "--json").stdout)
    apps = {n["name"]: n["apps"] for n in shown["nodes"]}
    (proxy,) = apps["proxy"]
    assert (proxy["kind"], proxy["port"], proxy["running"]) == ("haproxy", 80, True), apps
    with open(f"/proc/{proxy['pid']}/comm") as f:
        assert f.read().strip() == "haproxy"
    assert [a["kind"] for a in apps["web"]] == ["http"]
    assert "haproxy :80" in nslab("status", lab.name).stdout
    assert nslab("fail", lab.name, "proxy").returncode == 0
    table = nslab("status", lab.name).stdout
    assert any("haproxy :80" in line and "FAILED (nslab fail)" in line for line in table.splitlines()), table
