"""Command line: ``python -m fused_sigmoid demo``, ``python -m fused_sigmoid bench`` and
``python -m fused_sigmoid train``."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fused_sigmoid", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="the tutorial's examples with our layer, beside eager PyTorch")
    commands.add_parser("bench", help="speed and memory against eager and torch.compile", add_help=False)
    commands.add_parser("train", help="a breast-cancer classifier with our output layer, beside its eager twin",
                        add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        if rest:
            parser.error(f"demo takes no arguments, got {' '.join(rest)}")
        from fused_sigmoid import demo

        return demo.main()
    if args.command == "train":
        from fused_sigmoid import training

        return training.main(rest)
    from fused_sigmoid import bench

    return bench.main(rest)


if __name__ == "__main__":
    sys.exit(main())
