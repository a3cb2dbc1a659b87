"""haproxy as a lab process on the host kernel: started by up, ended by down, and verify's l4-l7 check from
what the servers saw (two connections through the proxy, /api always on rs2)."""

import shutil

import pytest

from nslab import api, model
from nslab.kernel import netns

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (apt-get install haproxy)")

LAB = """
name: proxy-t
switches: [lan]
nodes:
  client: {interfaces: {eth0: {switch: lan, address: 10.0.0.9/24}}}
  proxy: {interfaces: {eth0: {switch: lan, address: 10.0.0.3/24}}, proxy: {servers: [rs1, rs2], paths: {/api: rs2}}}
  rs1: {interfaces: {eth0: {switch: lan, address: 10.0.0.11/24}}, app: http}
  rs2: {interfaces: {eth0: {switch: lan, address: 10.0.0.12/24}}, app: http}
"""


def test_proxy_is_two_connections_and_chooses_by_path():
    with api.Lab(model.loads(LAB, "proxy-t.yaml")) as lab:
        api_replies = [lab.run("client", ["python3", "-c", "import urllib.request as u; r = u.urlopen("
                                          "'http://10.0.0.3/api/x', timeout=10); print(r.headers['X-Served-By'], "
                                          "r.headers['X-Client'])"]).stdout.split() for _ in range(3)]
        report = lab.verify()
    assert all(r[0] == "rs2" and r[1].startswith("10.0.0.3:") for r in api_replies), api_replies
    got = {r.name: r for r in report.results}
    assert report.ok and got["l4-l7:proxy"].status == "PASS", str(report)
    assert "the server sees proxy, not the client" in got["l4-l7:proxy"].summary
    assert [n for n in netns.list_names() if n.startswith("proxy-t-")] == []
