"""A missing or broken compiled extension is reported on import with the reason and how to build it."""

import subprocess
import sys

# The child blocks fused_sigmoid._C the way a missing build does, then imports the package.
CHILD = r"""
import sys
sys.modules["fused_sigmoid._C"] = None
try:
    import fused_sigmoid
except ImportError as error:
    print(error)
else:
    print("imported")
"""


def test_import_without_the_extension_says_why_and_how_to_build():
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    message = child.stdout
    assert "fused_sigmoid: the compiled extension fused_sigmoid._C could not be loaded" in message
    assert "pip install --no-build-isolation -e ." in message
