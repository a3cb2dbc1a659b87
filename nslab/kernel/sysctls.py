"""The Sysctls action: set a namespace's keys, remembering the old values for rollback."""

from . import sysctl


class Sysctls:
    @staticmethod
    def done(s, a):
        current = sysctl.read_many(a.ns, [k for k, _ in a.values])
        return all(current[k] == v or (current[k] is None and a.optional) for k, v in a.values)

    @staticmethod
    def do(s, a):
        current = sysctl.read_many(a.ns, [k for k, _ in a.values])
        missing = [k for k, _ in a.values if current[k] is None]
        if missing and not a.optional:
            raise FileNotFoundError(f"sysctl {missing[0]} does not exist in {a.ns}")
        s.undo_data[a] = [(k, current[k]) for k, _ in a.values if current[k] is not None]
        sysctl.write_many(a.ns, [(k, v) for k, v in a.values if current[k] not in (None, v)])

    @staticmethod
    def undo(s, a):
        sysctl.write_many(a.ns, s.undo_data.pop(a, []))
