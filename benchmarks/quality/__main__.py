"""`python -m benchmarks.quality [flags]`: see `benchmarks/quality/cli.py`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads

from benchmarks.quality import cli  # noqa: E402

if __name__ == "__main__":
    cli.main()
