"""The fault timeline of a load (verify/timeline.py): per-second rows, error span and recovery, from samples."""

from nslab.verify import timeline


def samples(rows):
    """(t, answered, refused, reset, stalled) every 0.5 s from cumulative (answered, refused, stalled)."""
    return [(i * 0.5, a, f, 0, s) for i, (a, f, s) in enumerate(rows)]


def test_errors_between_fail_and_heal_then_answers_again():
    s = samples([(0, 0, 0), (50, 0, 0), (100, 0, 0), (110, 40, 0), (110, 90, 0), (130, 95, 0), (180, 95, 0)])
    out = timeline.summarize(s, [{"at": 1.0, "what": "fail"}], fail_at=1.0, heal_at=2.0)
    assert [r["answered"] for r in out["seconds"]] == [100, 10, 70]
    assert [r["refused"] for r in out["seconds"]] == [0, 90, 5]
    assert out["refused"] == 95 and out["first_error_s"] == 1.0 and out["last_error_s"] == 2.5
    assert out["recovered"] and out["recovered_after_fail_s"] == 1.5 and out["recovered_after_heal_s"] == 0.5


def test_stalled_syns_count_as_errors_and_no_answer_after_means_not_recovered():
    s = samples([(0, 0, 0), (50, 0, 0), (50, 0, 3), (50, 0, 4)])
    out = timeline.summarize(s, [], fail_at=0.5, heal_at=None)
    assert out["seconds"][1]["stalled"] == 4 and out["refused"] == 0
    assert out["recovered"] is False and "recovered_after_fail_s" not in out


def test_no_errors_recovered_at_once():
    s = samples([(0, 0, 0), (50, 0, 0), (100, 0, 0)])
    out = timeline.summarize(s, [], fail_at=0.2, heal_at=None)
    assert out["first_error_s"] is None and out["recovered"] and out["recovered_after_fail_s"] == 0.0


def test_stalled_reads_syn_sent_sockets_with_a_retransmitted_syn():
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    vip = timeline._hex_addr("10.0.0.100", 80)
    rows = [f"   0: 0A01A8C0:9C40 {vip} 02 00000000:00000000 01:00000100 00000002     0        0 1",
            f"   1: 0A01A8C0:9C41 {vip} 02 00000000:00000000 01:00000100 00000000     0        0 2",  # first SYN
            f"   2: 0A01A8C0:9C42 {vip} 01 00000000:00000000 00:00000000 00000000     0        0 3"]
    assert timeline.stalled(head + "\n".join(rows), "10.0.0.100", 80) == 1
    assert timeline.stalled(head + "\n".join(rows), "10.0.0.101", 80) == 0
