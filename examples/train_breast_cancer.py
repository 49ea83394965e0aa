"""Trains a breast-cancer classifier whose output layer is FusedLinearSigmoid, beside its eager twin: see
fused_sigmoid/training.py, or run `python examples/train_breast_cancer.py --help`."""

import sys

from fused_sigmoid.training import main

if __name__ == "__main__":
    sys.exit(main())
