"""The pipeline benchmark (same as ``outdial bench``): ``python -m tests.benchmarks.bench_pipeline [options]``."""

import sys

from workers.dev.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
