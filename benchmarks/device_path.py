"""Run advspatial's command line with a device's path forced on the CPU, so that the run's ledger counts the host
reads a GPU would wait on (checks held to a stage's end, early stops that drop rows only at a few points).

Why: on a CPU those checks read at once and an early stop drops rows at every step, the cheapest choice there; the
ledger of such a run counts a CPU's reads. With ``host_syncs.DEVICE_PATH_ON_CPU`` set the run takes the device's
path, gives the same results (tested) and counts the reads a device would make, on a machine without one; ROAD's
fill is solved there as on a GPU (conjugate gradients on the images' device, to about 1e-9 of the CPU's LU).

Usage::

    python benchmarks/device_path.py run --out runs/device-path --no-progress
    python benchmarks/ledger.py runs/device-path --depth 1
"""

from __future__ import annotations

import sys

from advspatial import host_syncs
from advspatial.cli.main import main

if __name__ == "__main__":
    host_syncs.DEVICE_PATH_ON_CPU = True
    main(sys.argv[1:])
