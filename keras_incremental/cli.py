"""The `keras-incremental` command: `bench` and `demo`."""

import sys

USAGE = """usage: keras-incremental {bench,demo} [options]

commands:
  bench   the class-incremental benchmark (see `keras-incremental bench -h`)
  demo    a full class-incremental run on scikit-learn's digits
          (see `keras-incremental demo -h`)
"""


def main(argv=None):
    """Entry point of the `keras-incremental` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from keras_incremental.bench.command import main as bench

        return bench(rest, prog="keras-incremental bench")
    if command == "demo":
        from keras_incremental.demo import main as demo

        return demo(rest, prog="keras-incremental demo")
    print(
        f"keras-incremental: unknown command {command!r}; expected 'bench' "
        "or 'demo'.\n\n" + USAGE,
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
