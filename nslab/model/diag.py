"""Collects every problem found in a topology, each addressed by its YAML path and line."""


from ..errors import TopologyError


def dotted(path) -> str:
    out = ""
    for part in path:
        if not isinstance(part, int):
            # A key is the user's text: a newline or an escape sequence in it must not reach the terminal raw.
            text = str(part)  # a key YAML read as a date, a number or null is named as the file wrote it
            part = text if text.isprintable() and text else repr(text)
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class Diagnostics:
    def __init__(self, source):
        self.source = source
        self.problems: list[tuple[int, str]] = []

    def error(self, path: tuple, message: str, fix: str = "", line: int | None = None) -> None:
        """Report a problem at a YAML path; line overrides the path's own line (e.g. a repeated key)."""
        line = line or self.source.line(tuple(path))
        where = f"{self.source.filename}:{line}" if line else self.source.filename
        text = f"{where}: {dotted(path)}: {message}" if path else f"{where}: {message}"
        if fix:
            text += f" ({fix})"
        self.problems.append((line or 0, text))

    def unknown_keys(self, path: tuple, mapping: dict, allowed) -> None:
        for key in mapping:
            if key in allowed:
                continue
            import difflib  # here: only a misspelt key pays for it
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(sorted(allowed))
            self.error(path + (key,), "unknown key", hint)

    def stop_if_any(self) -> None:
        """Raise every problem at once, in file order."""
        if self.problems:
            raise TopologyError([text for _, text in sorted(self.problems, key=lambda p: p[0])])
