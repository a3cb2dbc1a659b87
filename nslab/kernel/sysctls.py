"""The Sysctls action: set a namespace's keys, remembering the old values for rollback."""

from . import sysctl


class Sysctls:
    @staticmethod
    def done(s, a):
        for key, value in a.values:
            current = sysctl.read(a.ns, key)
            if current is None and a.optional:
                continue
            if current != value:
                return False
        return True

    @staticmethod
    def do(s, a):
        old = []
        for key, value in a.values:
            current = sysctl.read(a.ns, key)
            if current is None:
                if a.optional:
                    continue
                raise FileNotFoundError(f"sysctl {key} does not exist in {a.ns}")
            old.append((key, current))
            if current != value:
                sysctl.write(a.ns, key, value)
        s.undo_data[a] = old

    @staticmethod
    def undo(s, a):
        for key, value in s.undo_data.pop(a, []):
            sysctl.write(a.ns, key, value)
