"""The `mousflow` command line."""


def main(argv=None) -> int:
    raise SystemExit("mousflow: not implemented yet")
