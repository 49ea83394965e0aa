"""Command line: ``python -m fused_sigmoid demo``."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fused_sigmoid", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="the tutorial's examples with our layer, beside eager PyTorch")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from fused_sigmoid import demo

        return demo.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
