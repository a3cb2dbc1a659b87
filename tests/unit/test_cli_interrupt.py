"""A Ctrl-C at any moment of a command ends it with exit 130 and one line, never a traceback."""

from nslab import cli


def test_a_ctrl_c_while_the_parser_is_built_is_an_interrupt(monkeypatch, capsys):
    """A SIGINT in the first few hundred ms of a command lands while the parser is built (it imports the
    verify and fault commands' modules): main's handler did not cover that yet."""
    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "build_parser", interrupted)
    try:
        code = cli.main(["status"])
    except KeyboardInterrupt:
        code = "a KeyboardInterrupt out of main (a traceback)"
    assert code == 130
    assert capsys.readouterr().err == "nslab: interrupted\n"
